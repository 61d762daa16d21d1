"""LocalDocs end to end: the official `openai` SDK's files, vector stores and `file_search`
against the real server, which embeds with the embedded model (the stand-in); GPT4All's
`references` on Chat Completions, Ollama and Messages; and `gpt4all-api docs` on a folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import ServerProcess, default_sigint

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_FILE = 200_000

#: Planted facts: (file name, text holding the fact, a question about it, a word of the answer).
FACTS = [
    (
        "vacation.md",
        "Every employee gets 27 paid vacation days per calendar year.",
        "How many vacation days do employees get?",
        "27",
    ),
    (
        "parking.md",
        "The parking garage gate code is 4417; visitors park on level B2.",
        "What is the code of the parking garage gate?",
        "4417",
    ),
    (
        "wifi.md",
        "The guest wifi network is called Heron and its password is moss-lantern-88.",
        "What is the guest wifi password?",
        "moss-lantern-88",
    ),
    (
        "lunch.md",
        "The canteen serves lunch from 11:30 to 14:00, with soup on Thursdays.",
        "When does the canteen serve lunch?",
        "11:30",
    ),
    (
        "printer.md",
        "To print in color, send the job to the printer named Kestrel on floor 3.",
        "Which printer prints in color?",
        "Kestrel",
    ),
    (
        "badge.md",
        "Lost badges are replaced at the reception desk for a fee of 15 euros.",
        "Where can I replace a lost badge?",
        "reception",
    ),
]
FILLER = (
    "This section describes general office matters. Meetings start on time. Rooms are booked "
    "through the calendar. Please keep the kitchen tidy and label your food. "
)


def make_pdf(pages: list[str], title: str = "Employee handbook") -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_author("People team")
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str]) -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Facilities policy"
    d.core_properties.author = "Facilities"
    for p in paragraphs:
        d.add_paragraph(p)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def flat(text: str | None) -> str:
    """Text with its line breaks (a PDF's wrapped lines) as spaces."""
    return " ".join((text or "").split())


HANDBOOK_PDF = make_pdf(
    [FILLER * 3, FILLER + " Every employee gets 27 paid vacation days per calendar year. " + FILLER]
)
FACILITIES_DOCX = make_docx(
    [FILLER, "The parking garage gate code is 4417; visitors park on level B2.", FILLER]
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("localdocs")
    models = home / "models"
    models.mkdir()
    shutil.copy(embedded_model, models / "other-embedder.gguf")
    s = ServerProcess(
        models_dir=models,
        log_path=home / "server.log",
        args=["--catalog-url", "", "--max-file-size", str(MAX_FILE)],
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture()
def oai(srv: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def handbook(srv: ServerProcess) -> dict[str, Any]:
    """A vector store 'handbook' with a PDF, a DOCX, Markdown files and one corrupt file."""
    with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
        vs = c.vector_stores.create(name="handbook")
        pdf = c.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("handbook.pdf", HANDBOOK_PDF), poll_interval_ms=200
        )
        docx = c.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("facilities.docx", FACILITIES_DOCX), poll_interval_ms=200
        )
        corrupt = c.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id,
            file=("broken.pdf", b"%PDF-1.7\n this file was cut short"),
            poll_interval_ms=200,
        )
        md = {}
        for name, fact, _, _ in FACTS[2:]:
            f = c.vector_stores.files.upload_and_poll(
                vector_store_id=vs.id,
                file=(name, f"# {name}\n\n{FILLER}\n\n{fact}\n\n{FILLER}".encode()),
                poll_interval_ms=200,
            )
            md[name] = f
        return {"id": vs.id, "pdf": pdf, "docx": docx, "corrupt": corrupt, "md": md}


def test_the_example_works_as_written(srv: ServerProcess, tmp_path: Path) -> None:
    """The documentation's example, with a PDF opened from disk, against a fresh store."""
    (tmp_path / "handbook.pdf").write_bytes(HANDBOOK_PDF)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
    vs = client.vector_stores.create(name="example")
    with open(tmp_path / "handbook.pdf", "rb") as f:
        done = client.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=f)
    assert done.status == "completed"
    r = client.responses.create(
        model=M,
        input="How many vacation days do I get?",
        tools=[{"type": "file_search", "vector_store_ids": [vs.id]}],
        max_output_tokens=40,
        temperature=0,
    )
    assert [item.type for item in r.output] == ["file_search_call", "message"]
    notes = r.output[1].content[0].annotations
    assert notes and {a.type for a in notes} == {"file_citation"}
    assert {a.file_id for a in notes} == {done.id}
    client.close()


# -- files -------------------------------------------------------------------------------


def test_files_api(oai: openai.OpenAI, srv: ServerProcess) -> None:
    f = oai.files.create(file=("../../notes/evil.md", b"# Notes\nhello"), purpose="assistants")
    assert f.id.startswith("file-") and f.object == "file"
    assert f.filename == "evil.md" and f.bytes == len(b"# Notes\nhello")
    assert f.purpose == "assistants"
    assert oai.files.retrieve(f.id).filename == "evil.md"
    assert f.id in [x.id for x in oai.files.list()]
    assert oai.files.content(f.id).content == b"# Notes\nhello"
    stored = list((srv.models_dir.parent / "data").rglob(f.id))
    assert len(stored) == 1  # under the data folder, by id (never by the client's name)
    deleted = oai.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError) as info:
        oai.files.retrieve(f.id)
    assert info.value.body["code"] == "not_found"  # type: ignore[index]
    assert not stored[0].exists()


def test_files_refuse_bad_purpose_and_large_files(srv: ServerProcess) -> None:
    url = srv.base_url + "/v1/files"
    r = httpx.post(url, files={"file": ("a.txt", b"x")}, data={"purpose": "fun"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(url, data={"purpose": "assistants"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    big = b"x" * (MAX_FILE + 1)
    r = httpx.post(url, files={"file": ("big.txt", big)}, data={"purpose": "assistants"})
    assert r.status_code == 413 and str(MAX_FILE) in r.json()["error"]["message"]
    r = httpx.post(
        url, files={"file": ("big.txt", b"x" * (MAX_FILE * 3))}, data={"purpose": "assistants"}
    )
    assert r.status_code == 413


# -- vector stores -----------------------------------------------------------------------


def test_upload_and_poll_indexes_pdf_and_docx_and_fails_the_corrupt_file_alone(
    oai: openai.OpenAI, handbook: dict[str, Any]
) -> None:
    assert handbook["pdf"].status == "completed" and handbook["pdf"].last_error is None
    assert handbook["docx"].status == "completed"
    assert all(f.status == "completed" for f in handbook["md"].values())
    corrupt = handbook["corrupt"]
    assert corrupt.status == "failed"
    assert corrupt.last_error is not None and corrupt.last_error.code == "invalid_file"
    assert "PDF" in corrupt.last_error.message
    vs = oai.vector_stores.retrieve(handbook["id"])
    assert vs.status == "completed" and vs.name == "handbook"
    assert vs.file_counts.completed == 2 + len(FACTS[2:]) and vs.file_counts.failed == 1
    assert vs.file_counts.in_progress == 0 and vs.usage_bytes > 0
    listed = oai.vector_stores.files.list(vector_store_id=vs.id, filter="failed")
    assert [f.id for f in listed] == [corrupt.id]


def test_search_returns_the_chunk_holding_the_fact(
    oai: openai.OpenAI, handbook: dict[str, Any]
) -> None:
    page = oai.vector_stores.search(
        vector_store_id=handbook["id"], query="How many vacation days do employees get?"
    )
    top = page.data[0]
    assert top.file_id == handbook["pdf"].id and top.filename == "handbook.pdf"
    assert "27 paid vacation days" in flat(top.content[0].text)
    assert 0 < top.score <= 1
    page = oai.vector_stores.search(
        vector_store_id=handbook["id"], query="parking garage gate code", max_num_results=2
    )
    assert len(page.data) == 2
    assert page.data[0].file_id == handbook["docx"].id and "4417" in page.data[0].content[0].text


def test_search_honours_threshold_filters_and_errors(
    oai: openai.OpenAI, srv: ServerProcess, handbook: dict[str, Any]
) -> None:
    q = "guest wifi password"
    everything = oai.vector_stores.search(vector_store_id=handbook["id"], query=q)
    strict = oai.vector_stores.search(
        vector_store_id=handbook["id"], query=q, ranking_options={"score_threshold": 0.9}
    )
    assert len(strict.data) < len(everything.data)
    assert all(r.score >= 0.9 for r in strict.data)
    with pytest.raises(openai.NotFoundError):
        oai.vector_stores.search(vector_store_id="vs_nope", query=q)
    with pytest.raises(openai.BadRequestError) as info:
        oai.vector_stores.search(
            vector_store_id=handbook["id"],
            query=q,
            extra_body={"embedding_model": "other-embedder"},
        )
    assert info.value.body["code"] == "embedding_model_mismatch"  # type: ignore[index]
    assert M in info.value.body["message"]  # type: ignore[index]


def test_a_deleted_file_leaves_no_chunks(oai: openai.OpenAI) -> None:
    vs = oai.vector_stores.create(name="scratch")
    f = oai.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id,
        file=("secret.md", b"The launch code is ZEBRA-PAPAYA-9."),
        poll_interval_ms=200,
    )
    assert f.status == "completed"
    hits = oai.vector_stores.search(vector_store_id=vs.id, query="launch code")
    assert [h.file_id for h in hits.data] == [f.id]
    content = oai.vector_stores.files.content(vector_store_id=vs.id, file_id=f.id)
    assert "ZEBRA-PAPAYA-9" in "".join(c.text or "" for c in content)
    oai.files.delete(f.id)
    assert oai.vector_stores.search(vector_store_id=vs.id, query="launch code").data == []
    assert oai.vector_stores.retrieve(vs.id).file_counts.total == 0
    with pytest.raises(openai.NotFoundError):
        oai.vector_stores.files.retrieve(vector_store_id=vs.id, file_id=f.id)
    assert oai.vector_stores.delete(vs.id).deleted


def test_file_batches_and_other_embedding_model(oai: openai.OpenAI) -> None:
    ids = [
        oai.files.create(
            file=(f"b{i}.md", f"Batch note {i}: the color is teal.".encode()), purpose="assistants"
        ).id
        for i in range(3)
    ]
    vs = oai.vector_stores.create(name="batch", extra_body={"embedding_model": "other-embedder"})
    batch = oai.vector_stores.file_batches.create_and_poll(
        vector_store_id=vs.id, file_ids=ids, poll_interval_ms=200
    )
    assert batch.status == "completed" and batch.file_counts.completed == 3
    files = oai.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=vs.id)
    assert sorted(f.id for f in files) == sorted(ids)
    hits = oai.vector_stores.search(vector_store_id=vs.id, query="what color")
    assert {h.file_id for h in hits.data} == set(ids)
    oai.vector_stores.files.update(
        vector_store_id=vs.id, file_id=ids[1], attributes={"keep": True, "year": 2024}
    )
    kept = oai.vector_stores.search(
        vector_store_id=vs.id,
        query="what color",
        filters={
            "type": "and",
            "filters": [
                {"type": "eq", "key": "keep", "value": True},
                {"type": "gte", "key": "year", "value": 2020},
            ],
        },
    )
    assert [h.file_id for h in kept.data] == [ids[1]]
    assert kept.data[0].attributes == {"keep": True, "year": 2024}
    with pytest.raises(openai.BadRequestError) as info:
        oai.vector_stores.search(
            vector_store_id=vs.id, query="x", extra_body={"embedding_model": M}
        )
    assert "other-embedder.gguf" in info.value.body["message"]  # type: ignore[index]
    assert oai.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.vector_stores.retrieve(vs.id)


# -- file_search in the Responses API ----------------------------------------------------


def test_responses_file_search(oai: openai.OpenAI, handbook: dict[str, Any]) -> None:
    r = oai.responses.create(
        model=M,
        input="How many vacation days do I get?",
        tools=[{"type": "file_search", "vector_store_ids": [handbook["id"]], "max_num_results": 2}],
        include=["file_search_call.results"],
        max_output_tokens=40,
        temperature=0,
    )
    call, message = r.output[0], r.output[1]
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == ["How many vacation days do I get?"]
    assert call.results is not None and len(call.results) == 2
    assert call.results[0].file_id == handbook["pdf"].id
    assert "27 paid vacation days" in flat(call.results[0].text)
    assert message.type == "message"
    text = message.content[0]
    cited = [a for a in text.annotations if a.type == "file_citation"]
    assert handbook["pdf"].id in {a.file_id for a in cited}
    assert all(0 <= a.index <= len(text.text) for a in cited)
    assert {a.filename for a in cited} <= {"handbook.pdf", "facilities.docx", *handbook["md"]}
    print(
        "\nfile_search response:", json.dumps(r.model_dump(exclude_none=True)["output"], indent=1)
    )


def test_responses_file_search_without_results_and_threshold(
    oai: openai.OpenAI, handbook: dict[str, Any]
) -> None:
    r = oai.responses.create(
        model=M,
        input="What is the guest wifi password?",
        tools=[
            {
                "type": "file_search",
                "vector_store_ids": [handbook["id"]],
                "max_num_results": 1,
                "ranking_options": {"score_threshold": 0.0},
            }
        ],
        max_output_tokens=20,
        temperature=0,
    )
    call = r.output[0]
    assert call.type == "file_search_call" and call.results is None  # not asked for
    strict = oai.responses.create(
        model=M,
        input="Unrelated words: quasar marmalade",
        tools=[
            {
                "type": "file_search",
                "vector_store_ids": [handbook["id"]],
                "ranking_options": {"score_threshold": 1.0},
            }
        ],
        include=["file_search_call.results"],
        max_output_tokens=10,
        temperature=0,
    )
    assert strict.output[0].results == []
    assert all(not part.annotations for item in strict.output[1:] for part in item.content)


def test_responses_file_search_streams(oai: openai.OpenAI, handbook: dict[str, Any]) -> None:
    kinds, numbers, final = [], [], None
    for event in oai.responses.create(
        model=M,
        input="What is the code of the parking garage gate?",
        tools=[{"type": "file_search", "vector_store_ids": [handbook["id"]], "max_num_results": 2}],
        max_output_tokens=30,
        temperature=0,
        stream=True,
    ):
        kinds.append(event.type)
        numbers.append(event.sequence_number)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert final is not None
    assert numbers == list(range(len(numbers)))
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:7] == [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert "response.output_text.annotation.added" in kinds
    assert final.output[0].type == "file_search_call"
    cited = {a.file_id for a in final.output[1].content[0].annotations}
    assert handbook["docx"].id in cited


def test_responses_file_search_is_stored_without_the_passages(
    oai: openai.OpenAI, srv: ServerProcess, handbook: dict[str, Any]
) -> None:
    tool = {"type": "file_search", "vector_store_ids": [handbook["id"]], "max_num_results": 1}
    first = oai.responses.create(
        model=M, input="Where do visitors park?", tools=[tool], max_output_tokens=8, temperature=0
    )
    stored = oai.responses.retrieve(first.id)
    assert stored.output[0].type == "file_search_call"
    assert stored.output[1].content[0].annotations == first.output[1].content[0].annotations
    items = oai.responses.input_items.list(first.id)
    assert [i.content[0].text for i in items.data] == ["Where do visitors park?"]
    second = oai.responses.create(
        model=M, previous_response_id=first.id, input="Thanks!", max_output_tokens=8
    )
    assert second.status in ("completed", "incomplete")
    # the first turn's prompt held the passage; the continued one holds only the conversation
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens < first.usage.input_tokens


def test_responses_file_search_bad_tools(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=M, input="x", tools=[{"type": "file_search"}])
    assert info.value.body["param"] == "tools[0].vector_store_ids"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(
            model=M, input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_nope"]}]
        )


# -- GPT4All references ------------------------------------------------------------------

REFERENCE_KEYS = {"file", "title", "author", "date", "text", "page", "from", "to"}


def test_chat_completions_localdocs_references(
    oai: openai.OpenAI, srv: ServerProcess, handbook: dict[str, Any]
) -> None:
    body = {
        "model": M,
        "messages": [{"role": "user", "content": "How many vacation days do employees get?"}],
        "max_tokens": 20,
        "temperature": 0,
        "n": 2,
        "localdocs": ["handbook"],
    }
    r = httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert len(choices) == 2 and choices[0]["references"] == choices[1]["references"]
    refs = choices[0]["references"]
    assert set(refs[0]) == REFERENCE_KEYS
    top = refs[0]
    assert top["file"] == "handbook.pdf" and top["title"] == "Employee handbook"
    assert top["author"] == "People team" and top["page"] == 2
    assert "27 paid vacation days" in flat(top["text"])
    assert 0 <= top["from"] < top["to"]
    assert top["date"]
    # the SDK passes the extension through extra_body
    done = oai.chat.completions.create(
        model=M,
        messages=[{"role": "user", "content": "Where do visitors park?"}],
        max_tokens=10,
        extra_body={"localdocs": ["handbook"]},
    )
    refs = done.choices[0].model_extra["references"]  # type: ignore[index]
    assert refs[0]["file"] == "facilities.docx" and refs[0]["page"] == -1


def test_references_null_when_nothing_found_and_404_for_unknown(
    oai: openai.OpenAI, srv: ServerProcess
) -> None:
    oai.vector_stores.create(name="empty-collection")
    url = srv.base_url + "/v1/chat/completions"
    body = {"model": M, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    r = httpx.post(url, json={**body, "localdocs": ["empty-collection"]}, timeout=300)
    assert r.status_code == 200 and r.json()["choices"][0]["references"] is None
    r = httpx.post(url, json={**body, "localdocs": ["no-such-collection"]}, timeout=300)
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "localdocs"
    streamed = httpx.post(url, json={**body, "localdocs": ["empty-collection"], "stream": True})
    finals = [
        json.loads(line[5:])
        for line in streamed.text.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]
    last = next(c for c in finals if c["choices"] and c["choices"][0]["finish_reason"])
    assert last["choices"][0]["references"] is None


def test_ollama_and_messages_localdocs(srv: ServerProcess, handbook: dict[str, Any]) -> None:
    q = [{"role": "user", "content": "What is the guest wifi password?"}]
    r = httpx.post(
        srv.base_url + "/api/chat",
        json={
            "model": M,
            "messages": q,
            "stream": False,
            "localdocs": ["handbook"],
            "options": {"num_predict": 8},
        },
        timeout=300,
    )
    assert r.status_code == 200, r.text
    assert r.json()["references"][0]["file"] == "wifi.md"
    lines = httpx.post(
        srv.base_url + "/api/chat",
        json={"model": M, "messages": q, "localdocs": ["handbook"], "options": {"num_predict": 4}},
        timeout=300,
    ).text.splitlines()
    last = json.loads(lines[-1])
    assert last["done"] and last["references"][0]["file"] == "wifi.md"
    r = httpx.post(
        srv.base_url + "/v1/messages",
        json={"model": M, "messages": q, "max_tokens": 8, "localdocs": ["handbook"]},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    assert r.json()["references"][0]["file"] == "wifi.md"
    r = httpx.post(
        srv.base_url + "/v1/messages",
        json={"model": M, "messages": q, "max_tokens": 8, "localdocs": ["nope"]},
        timeout=300,
    )
    assert r.status_code == 404 and r.json()["type"] == "error"


# -- retrieval quality -------------------------------------------------------------------


def test_hybrid_recall_at_3_is_at_least_as_good_as_each_method(
    oai: openai.OpenAI, srv: ServerProcess
) -> None:
    vs = oai.vector_stores.create(name="facts")
    ids = {}
    for i, (name, fact, _, _) in enumerate(FACTS):
        others = " ".join(FILLER for _ in range(2 + i % 3))
        f = oai.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id,
            file=(name, f"{others}\n\n{fact}\n\n{others}".encode()),
            poll_interval_ms=200,
        )
        assert f.status == "completed"
        ids[name] = f.id
    recall = {}
    for mode in ("hybrid", "bm25", "vector"):
        found = 0
        for name, _, question, answer in FACTS:
            page = oai.vector_stores.search(
                vector_store_id=vs.id, query=question, max_num_results=3, extra_body={"mode": mode}
            )
            found += any(h.file_id == ids[name] and answer in h.content[0].text for h in page.data)
        recall[mode] = found / len(FACTS)
    print(f"\nrecall@3 over {len(FACTS)} planted facts: {recall}")
    assert recall["hybrid"] >= recall["bm25"] and recall["hybrid"] >= recall["vector"]
    assert recall["hybrid"] >= 0.8


# -- the CLI -----------------------------------------------------------------------------


def _docs(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4all_api", "docs", "--url", srv.base_url, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def test_cli_docs_add_picks_up_changes(srv: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "boat.md").write_text("# Boat\nThe boat is named Albatross and is moored at pier 9.")
    (folder / "sub" / "garden.txt").write_text("The garden gate key hangs in the shed.")
    (folder / "report.pdf").write_bytes(make_pdf(["Quarterly revenue rose by 12 percent."]))
    (folder / ".hidden.md").write_text("never indexed")
    (folder / "broken.docx").write_bytes(b"not a docx")
    r = _docs(srv, "add", "notes", str(folder))
    assert r.returncode == 0, r.stderr
    assert "notes: 4 added, 0 updated, 0 removed, 0 unchanged, 1 failed" in r.stdout
    assert "broken.docx" in r.stderr
    r = _docs(srv, "search", "notes", "what is the boat called")
    assert r.returncode == 0 and "Albatross" in r.stdout.splitlines()[1]
    r = _docs(srv, "list")
    assert "notes" in r.stdout and str(folder.resolve()) in r.stdout

    time.sleep(0.05)
    (folder / "boat.md").write_text("# Boat\nThe boat was renamed Cormorant and sails on Sundays.")
    (folder / "sub" / "garden.txt").unlink()
    r = _docs(srv, "reindex", "notes")
    assert r.returncode == 0, r.stderr
    assert "notes: 0 added, 1 updated, 1 removed, 2 unchanged, 1 failed" in r.stdout
    r = _docs(srv, "search", "notes", "what is the boat called")
    assert "Cormorant" in r.stdout and "Albatross" not in r.stdout
    r = _docs(srv, "search", "notes", "garden gate key")
    assert "garden" not in r.stdout.lower()

    r = _docs(srv, "rm", "notes")
    assert r.returncode == 0 and "removed notes" in r.stdout
    r = _docs(srv, "search", "notes", "boat")
    assert r.returncode != 0 and "no collection named 'notes'" in r.stderr


def test_cli_docs_add_watch_keeps_the_collection_current(
    srv: ServerProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "plan.md").write_text("The offsite is in Lisbon.")
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpt4all_api",
                "docs",
                "--url",
                srv.base_url,
                "add",
                "watched",
                str(folder),
                "--watch",
                "0.5",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=default_sigint,  # stopped with Ctrl-C as at a terminal
        )
        try:
            _wait_for(out, "watched: 1 added")
            (folder / "plan.md").write_text("The offsite moved to Porto.")
            (folder / "extra.md").write_text("Bring a raincoat.")
            _wait_for(out, "watched: 1 added, 1 updated, 0 removed")
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
    r = _docs(srv, "search", "watched", "where is the offsite")
    assert "Porto" in r.stdout and "Lisbon" not in r.stdout


def _wait_for(path: Path, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in:\n{path.read_text()}")


def test_cli_docs_in_process(srv: ServerProcess, tmp_path: Path) -> None:
    """Without --url the command serves the app itself, on the same data folder a server uses."""
    folder = tmp_path / "letters"
    folder.mkdir()
    (folder / "letter.md").write_text("Dear Ada, the telescope arrives on Friday.")
    where = [
        "--models-dir",
        str(srv.models_dir),
        "--data-dir",
        str(tmp_path / "data"),
    ]

    def docs(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "gpt4all_api", "docs", *where, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    r = docs("add", "letters", str(folder))
    assert r.returncode == 0, r.stderr
    assert "letters: 1 added" in r.stdout
    assert (tmp_path / "data" / "localdocs" / "localdocs.sqlite3").exists()
    r = docs("search", "letters", "when does the telescope arrive")
    assert r.returncode == 0 and "Friday" in r.stdout
