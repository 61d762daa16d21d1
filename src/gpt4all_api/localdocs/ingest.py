"""A file's bytes -> its text, page by page, and its metadata, through well-kept parsers:
pypdf (PDF), python-docx (DOCX), the standard library's HTML parser, and UTF-8 text (plain
text, Markdown, reStructuredText and other text formats, as written).

A file that cannot be read raises `UnreadableFile`, whose message says why.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".markdown", ".rst", ".text", ".csv", ".json", ".yaml", ".yml", ".log", ".tex"}
)
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"}


class UnreadableFile(Exception):
    """The file's format is not supported, or its content could not be parsed."""

    def __init__(self, message: str, code: str = "invalid_file"):
        super().__init__(message)
        self.message = message
        self.code = code  # OpenAI's `last_error.code`: `invalid_file` or `unsupported_file`


@dataclass(frozen=True)
class Page:
    number: int | None  # 1-based page number (PDF); None where a format has no pages
    text: str


@dataclass
class Document:
    pages: list[Page]
    title: str | None = None
    author: str | None = None
    date: str | None = None  # as the document states it (ISO 8601 where known)
    kind: str = "text"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pages)


def parse(data: bytes, filename: str) -> Document:
    """The document in `data`; the format is told by the name, then by the content."""
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".pdf" or data.startswith(b"%PDF-"):
        return _pdf(data)
    if suffix == ".docx":
        return _docx(data)
    if suffix in HTML_SUFFIXES:
        return _html(_decode(data, filename))
    if suffix in TEXT_SUFFIXES or suffix == "":
        return Document([Page(None, _decode(data, filename))], kind="text")
    raise UnreadableFile(
        f"{filename}: files of type '{suffix}' are not supported (text, Markdown, "
        "reStructuredText, HTML, PDF and DOCX are)",
        code="unsupported_file",
    )


def _decode(data: bytes, filename: str) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableFile(f"{filename} is not a text file (it holds NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1]
        raise UnreadableFile(
            f"{filename} is not valid UTF-8 text (byte {exc.start}: {bad!r})"
        ) from None
    return text.replace("\r\n", "\n")


def _pdf(data: bytes) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableFile("the PDF is encrypted")
        pages = [Page(i + 1, (p.extract_text() or "") + "\n\n") for i, p in enumerate(reader.pages)]
        meta = reader.metadata
    except UnreadableFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AssertionError) as exc:
        raise UnreadableFile(f"the PDF could not be read: {exc or type(exc).__name__}") from None
    if not any(p.text.strip() for p in pages):
        raise UnreadableFile(
            "the PDF holds no text (scanned pages need OCR, which this server lacks)"
        )
    date = None
    if meta is not None:
        try:
            created = meta.creation_date
            date = created.isoformat() if created else None
        except (ValueError, TypeError):
            date = None
    return Document(
        pages,
        title=_clean(meta.title) if meta else None,
        author=_clean(meta.author) if meta else None,
        date=date,
        kind="pdf",
    )


def _docx(data: bytes) -> Document:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        d = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnreadableFile(f"the DOCX could not be read: {exc or type(exc).__name__}") from None
    parts = [p.text for p in d.paragraphs]
    for table in d.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    text = "\n".join(parts).strip()
    if not text:
        raise UnreadableFile("the DOCX holds no text")
    core = d.core_properties
    date = core.created or core.modified
    return Document(
        [Page(None, text + "\n")],
        title=_clean(core.title),
        author=_clean(core.author),
        date=date.isoformat() if date else None,
        kind="docx",
    )


class _HTMLText(HTMLParser):
    """The visible text of an HTML page (no scripts or styles), one line per block, and its
    title."""

    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "header",
            "footer",
            "pre",
            "blockquote",
            "table",
            "ul",
            "ol",
            "dt",
            "dd",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.out.append(data)


def _html(source: str) -> Document:
    parser = _HTMLText()
    parser.feed(source)
    parser.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.out))
    text = re.sub(r"\s*\n\s*", "\n", text).strip()
    return Document([Page(None, text + "\n")], title=_clean("".join(parser.title)), kind="html")


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None
