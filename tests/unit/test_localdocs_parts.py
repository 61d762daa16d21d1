"""LocalDocs without a model: parsing, chunking, the SQLite index and hybrid search (with a
bag-of-words embedder standing in for the model), filters, names and citations."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gpt4all_api.core.plan import Plan, Turn
from gpt4all_api.localdocs import chunk as chunking
from gpt4all_api.localdocs.filters import check, matches
from gpt4all_api.localdocs.index import Index, StoredChunk
from gpt4all_api.localdocs.ingest import UnreadableFile, parse
from gpt4all_api.localdocs.prompt import augment, citations
from gpt4all_api.localdocs.search import Hit, fts_query, search
from gpt4all_api.localdocs.service import Result, safe_filename

DIM = 64


def embed(text: str) -> np.ndarray:
    """Words hashed into a normalised bag-of-words vector."""
    v = np.zeros(DIM, dtype=np.float32)
    for word in text.lower().split():
        word = word.strip(".,:;!?")
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    n = np.linalg.norm(v)
    return v / n if n else v


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Handbook")
    pdf.set_author("Jane Roe")
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str]) -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Policy"
    d.core_properties.author = "John Doe"
    for p in paragraphs:
        d.add_paragraph(p)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def test_pdf_pages_and_metadata() -> None:
    doc = parse(make_pdf(["The first page.", "Vacation: 27 days a year."]), "h.pdf")
    assert [p.number for p in doc.pages] == [1, 2]
    assert "27 days" in doc.pages[1].text
    assert doc.title == "Handbook" and doc.author == "Jane Roe"
    assert doc.date and doc.date[:2] == "20"


def test_docx_text_and_metadata() -> None:
    doc = parse(make_docx(["Parking is on level 3.", "Badges open every door."]), "p.docx")
    assert "level 3" in doc.text and "Badges" in doc.text
    assert doc.title == "Policy" and doc.author == "John Doe"


def test_html_keeps_visible_text_only() -> None:
    html = (
        b"<html><head><title>T</title><style>p{}</style><script>var x=1;</script></head>"
        b"<body><h1>Head</h1><p>Body &amp; soul</p></body></html>"
    )
    doc = parse(html, "a.html")
    assert doc.title == "T"
    assert doc.text.split() == ["Head", "Body", "&", "soul"]


def test_markdown_and_rst_are_text() -> None:
    assert parse(b"# Title\n\nText", "a.md").text.startswith("# Title")
    assert "Title\n=====" in parse(b"Title\n=====\n", "a.rst").text


@pytest.mark.parametrize(
    ("data", "name", "code"),
    [
        (b"%PDF-1.4 this is not really a PDF", "bad.pdf", "invalid_file"),
        (b"PK\x03\x04 broken zip", "bad.docx", "invalid_file"),
        (b"\xff\xfe\x00\x00binary", "bad.txt", "invalid_file"),
        (b"MZ\x90\x00", "tool.exe", "unsupported_file"),
    ],
)
def test_unreadable_files_say_why(data: bytes, name: str, code: str) -> None:
    with pytest.raises(UnreadableFile) as info:
        parse(data, name)
    assert info.value.code == code and info.value.message


def test_docx_that_is_a_zip_of_something_else() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(UnreadableFile):
        parse(out.getvalue(), "x.docx")


def test_chunks_keep_offsets_and_pages() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    doc = parse(make_pdf([text[:3000], "Second page text."]), "x.pdf")
    pieces = chunking.chunks(doc, size=300, overlap=40)
    assert len(pieces) > 5
    whole = doc.text
    for c in pieces:
        assert c.text == whole[c.start : c.end].strip()
        assert c.end - c.start <= 300
    assert pieces[-1].page == 2 and pieces[0].page == 1
    starts = [c.start for c in pieces]
    assert starts == sorted(starts)


def test_spans_cover_the_text() -> None:
    text = "word " * 1000
    spans = chunking.spans(text, 100, 20)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (a, b), (c, _) in itertools.pairwise(spans):
        assert c <= b and c > a  # overlapping, always moving on


def _index_with(tmp_path: Path, docs: dict[str, str]) -> tuple[Index, dict[str, str]]:
    index = Index(tmp_path)
    index.add_store(
        {"id": "vs_1", "name": "c", "created_at": 1, "metadata": {}, "embedding_model": "fake"}
    )
    ids = {}
    for n, (name, text) in enumerate(docs.items()):
        file_id = f"file-{n}"
        index.add_file(file_id, name, text.encode(), "assistants")
        index.attach("vs_1", file_id, {"n": n})
        pieces = chunking.chunks(parse(text.encode(), name), size=200, overlap=20)
        vectors = np.stack([embed(c.text) for c in pieces])
        assert index.put_chunks("vs_1", file_id, pieces, vectors, {"title": name})
        ids[name] = file_id
    return index, ids


DOCS = {
    "zebra.md": "Zebras have black and white stripes. They live in Africa on the savanna.",
    "tea.md": "Green tea is brewed at 80 degrees for two minutes. Black tea takes boiling water.",
    "moon.md": "The code word for the vault is PERIWINKLE-42. Keep it secret.",
}


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
def test_search_finds_the_planted_fact(tmp_path: Path, mode: str) -> None:
    index, ids = _index_with(tmp_path, DOCS)
    q = "what is the code word for the vault"
    hits = search(index, ["vs_1"], q, embed(q), limit=3, mode=mode)  # type: ignore[arg-type]
    assert hits and hits[0].chunk.file_id == ids["moon.md"]
    assert 0 < hits[-1].score <= hits[0].score <= 1.0


def test_hybrid_score_and_threshold(tmp_path: Path) -> None:
    index, _ = _index_with(tmp_path, DOCS)
    q = "brewing green tea"
    hits = search(index, ["vs_1"], q, embed(q), limit=3)
    assert hits[0].score == 1.0  # first for both methods
    kept = search(index, ["vs_1"], q, embed(q), limit=3, threshold=0.99)
    assert [h.chunk.id for h in kept] == [hits[0].chunk.id]


#: Planted facts (file, fact, question, a word of the answer) among office filler, as the
#: end-to-end recall test has them.
FACTS = [
    (
        "vacation.md",
        "Every employee gets 27 paid vacation days per year.",
        "How many vacation days do employees get?",
        "27",
    ),
    (
        "parking.md",
        "The parking garage gate code is 4417.",
        "What is the code of the parking garage gate?",
        "4417",
    ),
    (
        "wifi.md",
        "The guest wifi is called Heron, its password is moss-lantern-88.",
        "What is the guest wifi password?",
        "moss",
    ),
    (
        "lunch.md",
        "The canteen serves lunch from 11:30 to 14:00.",
        "When does the canteen serve lunch?",
        "11:30",
    ),
    (
        "printer.md",
        "To print in color, use the printer named Kestrel.",
        "Which printer prints in color?",
        "Kestrel",
    ),
    (
        "badge.md",
        "Lost badges are replaced at the reception desk.",
        "Where can I replace a lost badge?",
        "reception",
    ),
]
FILLER = (
    "This section describes general office matters. Meetings start on time. Rooms are booked "
    "through the calendar. Please keep the kitchen tidy and label your food. "
)


def noise_embedder(salt: int) -> Callable[[str], np.ndarray]:
    """A useless embedder (the chat model standing in for one can be nearly as poor): every
    text gets nearly the same vector, plus a little noise that depends on the text (and on
    `salt`), not on its meaning."""

    def embed(text: str) -> np.ndarray:
        seed = int(hashlib.md5(f"{salt}:{text}".encode()).hexdigest()[:8], 16)
        noise = np.random.default_rng(seed).standard_normal(DIM)
        v = np.ones(DIM) + 0.05 * noise
        return (v / np.linalg.norm(v)).astype(np.float32)

    return embed


def test_a_noise_embedder_barely_moves_clear_bm25_hits_out_of_the_top_3(
    tmp_path: Path,
) -> None:
    """Six facts planted among office filler, as in the end-to-end recall test, searched with
    60 different noise embedders: 360 lookups. BM25 finds every fact in its top 3; hybrid
    search must keep at least 99% of them. (Fusing scores, each divided by its method's best, it
    misses none; reciprocal rank fusion missed 47, 13%: the noise's ranks counted as much as
    BM25's.)"""
    misses = {"hybrid": 0, "bm25": 0}
    for salt in range(60):
        embed_with = noise_embedder(salt)
        index = Index(tmp_path / str(salt))
        index.add_store(
            {"id": "vs_1", "name": "c", "created_at": 1, "metadata": {}, "embedding_model": "x"}
        )
        for n, (name, fact, _, _) in enumerate(FACTS):
            others = " ".join(FILLER for _ in range(2 + n % 3))
            data = f"{others}\n\n{fact}\n\n{others}".encode()
            index.add_file(f"file-{n}", name, data, "assistants")
            index.attach("vs_1", f"file-{n}", {})
            pieces = chunking.chunks(parse(data, name))
            vectors = np.stack([embed_with(c.text) for c in pieces])
            assert index.put_chunks("vs_1", f"file-{n}", pieces, vectors, {"title": name})
        for n, (_, _, question, answer) in enumerate(FACTS):
            for mode in misses:
                hits = search(
                    index,
                    ["vs_1"],
                    question,
                    embed_with(question),
                    limit=3,
                    mode=mode,  # type: ignore[arg-type]
                )
                misses[mode] += not any(
                    h.chunk.file_id == f"file-{n}" and answer in h.chunk.text for h in hits
                )
    assert misses["bm25"] == 0  # every question names its fact's rare words
    assert misses["hybrid"] <= 3, misses


def test_search_within_some_files_only(tmp_path: Path) -> None:
    index, ids = _index_with(tmp_path, DOCS)
    q = "the code word for the vault"
    hits = search(index, ["vs_1"], q, embed(q), limit=3, file_ids=[ids["tea.md"]])
    assert hits and {h.chunk.file_id for h in hits} == {ids["tea.md"]}


def test_fts_query_quotes_everything() -> None:
    assert fts_query('a "b" OR c*') == '"a" OR "b" OR "or" OR "c"'
    assert fts_query("!!!") is None


def test_detach_and_delete_leave_no_chunks(tmp_path: Path) -> None:
    index, ids = _index_with(tmp_path, DOCS)
    assert index.chunk_count(file_id=ids["tea.md"]) > 0
    index.detach("vs_1", ids["tea.md"])
    assert index.chunk_count(file_id=ids["tea.md"]) == 0
    index.delete_file(ids["moon.md"])
    assert index.chunk_count(file_id=ids["moon.md"]) == 0
    assert not index.content_path(ids["moon.md"]).exists()
    assert index.orphan_fts_rows() == 0
    assert index.file_counts("vs_1")["total"] == 1


def test_chunks_of_a_file_that_left_are_not_written(tmp_path: Path) -> None:
    index, _ = _index_with(tmp_path, {})
    index.add_file("file-x", "x.md", b"hello world", "assistants")
    index.attach("vs_1", "file-x", {})
    index.detach("vs_1", "file-x")
    pieces = chunking.chunks(parse(b"hello world", "x.md"))
    assert not index.put_chunks("vs_1", "file-x", pieces, np.stack([embed("hello")]), {})
    assert index.chunk_count() == 0 and index.orphan_fts_rows() == 0


def test_filters() -> None:
    f = {
        "type": "and",
        "filters": [
            {"type": "eq", "key": "lang", "value": "en"},
            {
                "type": "or",
                "filters": [
                    {"type": "gte", "key": "year", "value": 2020},
                    {"type": "in", "key": "tag", "value": ["x", "y"]},
                ],
            },
        ],
    }
    check(f, "filters")
    assert matches(f, {"lang": "en", "year": 2021})
    assert matches(f, {"lang": "en", "year": 1999, "tag": "y"})
    assert not matches(f, {"lang": "fr", "year": 2021})
    assert not matches(f, {"lang": "en", "year": "new"})
    with pytest.raises(Exception, match="unknown filter type"):
        check({"type": "near", "key": "a", "value": 1}, "filters")


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..", "upload"),
        ("bad\x00name\n.txt", "badname.txt"),
        ("", "upload"),
        (".hidden", "hidden"),
    ],
)
def test_safe_filename(given: str, wanted: str) -> None:
    assert safe_filename(given) == wanted


def test_long_names_are_cut_to_255_bytes() -> None:
    assert len(safe_filename("é" * 300 + ".md").encode()) <= 255


def _result(file_id: str, name: str, text: str, page: int | None = None) -> Result:
    chunk = StoredChunk(1, "vs_1", file_id, text, page, 10, 10 + len(text))
    return Result(Hit(chunk, 0.5), name, {}, None, None, "2026-01-02")


def test_sources_go_before_the_question_with_their_files() -> None:
    plan = Plan(turns=(Turn("system", "Be brief."), Turn("user", "How many days?")))
    results = [_result("file-a", "a.pdf", "27 days.", page=2), _result("file-b", "b.md", "Hi.")]
    turns = augment(plan, results).turns
    assert turns[0] == plan.turns[0]
    assert turns[1].content.endswith("Question: How many days?")
    assert "[1] a.pdf, page 2:\n27 days." in turns[1].content
    assert "[2] b.md:\nHi." in turns[1].content
    assert augment(plan, []) is plan


def test_citations_at_markers_else_each_file_at_the_end() -> None:
    results = [_result("file-a", "a.pdf", "x"), _result("file-b", "b.md", "y")]
    text = "It is 27 days [1], see also [2] and [7]."
    notes = citations(text, results)
    assert [(n["file_id"], n["index"]) for n in notes] == [
        ("file-a", text.index("[1]")),
        ("file-b", text.index("[2]")),
    ]
    assert all(n["type"] == "file_citation" for n in notes)
    plain = citations("No markers here.", [*results, _result("file-a", "a.pdf", "z")])
    assert [(n["file_id"], n["index"]) for n in plain] == [("file-a", 16), ("file-b", 16)]
    assert citations("", results) == []


def test_reference_has_the_gpt4all_fields() -> None:
    ref = _result("file-a", "a.md", "text").reference()
    assert ref == {
        "file": "a.md",
        "title": "a.md",
        "author": "",
        "date": "2026-01-02",
        "text": "text",
        "page": -1,
        "from": 10,
        "to": 14,
    }


def test_vector_search_sees_changes_after_a_cached_search(tmp_path: Path) -> None:
    index, ids = _index_with(tmp_path, DOCS)
    q = "the code word for the vault"
    first = search(index, ["vs_1"], q, embed(q), limit=3, mode="vector")
    assert first[0].chunk.file_id == ids["moon.md"]
    index.detach("vs_1", ids["moon.md"])
    after = search(index, ["vs_1"], q, embed(q), limit=3, mode="vector")
    assert after and ids["moon.md"] not in {h.chunk.file_id for h in after}
