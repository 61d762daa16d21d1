"""`/openapi.json` tells the truth: a test walks the document and checks every answer the real
server gives, to valid and invalid requests, against the status and schema documented for that
operation (with the dialect's error body: OpenAI's, Anthropic's or Ollama's)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from conftest import ServerProcess

pytestmark = pytest.mark.e2e

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
KEY = "contract-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
STREAM_TYPES = {"text/event-stream", "application/x-ndjson"}
MAX_BODY = 8192
MAX_FILE = 4096
#: The multipart upload of `POST /v1/files`: (form fields, files).
UPLOAD = ({"purpose": "assistants"}, {"file": ("notes.md", b"# Notes\nhello")})
CHAT = [{"role": "user", "content": "Say hi."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

#: One valid request per documented operation: (path parameters, query, JSON body).
#: `{response_id}` is the id of a response this test stored first.
EXAMPLES: dict[tuple[str, str], tuple[dict[str, str], dict[str, Any], Any]] = {
    ("post", "/v1/completions"): ({}, {}, {"model": M, "prompt": "Hello", "max_tokens": 3}),
    ("post", "/v1/chat/completions"): (
        {},
        {},
        {"model": M, "messages": CHAT, "max_tokens": 3, "tools": [WEATHER]},
    ),
    ("post", "/v1/responses"): ({}, {}, {"model": M, "input": "Say hi.", "max_output_tokens": 3}),
    ("get", "/v1/responses/{response_id}"): ({}, {}, None),
    ("get", "/v1/responses/{response_id}/input_items"): ({}, {"limit": 5}, None),
    ("delete", "/v1/responses/{response_id}"): ({}, {}, None),
    ("post", "/v1/messages"): ({}, {}, {"model": M, "messages": CHAT, "max_tokens": 3}),
    ("post", "/v1/messages/count_tokens"): ({}, {}, {"model": M, "messages": CHAT}),
    ("get", "/api/version"): ({}, {}, None),
    ("get", "/api/tags"): ({}, {}, None),
    ("get", "/api/ps"): ({}, {}, None),
    ("post", "/api/show"): ({}, {}, {"model": M}),
    ("delete", "/api/delete"): ({}, {}, {"model": "second-copy.gguf"}),
    ("post", "/api/pull"): ({}, {}, {"model": M}),
    ("post", "/api/embed"): ({}, {}, {"model": M, "input": "hello"}),
    ("post", "/api/embeddings"): ({}, {}, {"model": M, "prompt": "hello"}),
    ("post", "/api/chat"): (
        {},
        {},
        {"model": M, "messages": CHAT, "stream": False, "options": {"num_predict": 3}},
    ),
    ("post", "/api/generate"): (
        {},
        {},
        {"model": M, "prompt": "Hello", "stream": False, "options": {"num_predict": 3}},
    ),
    ("post", "/v1/embeddings"): ({}, {}, {"model": M, "input": "hello"}),
    ("get", "/v1/models"): ({}, {}, None),
    ("get", "/v1/catalog"): ({}, {}, None),
    ("get", "/v1/models/{model_id}"): ({"model_id": M}, {}, None),
    ("delete", "/v1/models/{model_id}"): ({"model_id": "first-copy.gguf"}, {}, None),
    ("post", "/v1/models/pull"): ({}, {}, {"model": M}),
    ("post", "/tokenize"): ({}, {}, {"model": M, "content": "hello"}),
    ("post", "/detokenize"): ({}, {}, {"model": M, "tokens": [1, 2]}),
    ("get", "/health"): ({}, {}, None),
    ("get", "/ready"): ({}, {}, None),
    ("get", "/v1/stats"): ({}, {}, None),
    # LocalDocs: `{file_id}`, `{vector_store_id}`, `{batch_id}` are made by `localdocs_ids`;
    # string values "{name}" in a body are replaced by those ids.
    ("post", "/v1/files"): ({}, {}, UPLOAD),
    ("get", "/v1/files"): ({}, {"limit": 5}, None),
    ("get", "/v1/files/{file_id}"): ({}, {}, None),
    ("get", "/v1/files/{file_id}/content"): ({}, {}, None),
    ("delete", "/v1/files/{file_id}"): ({}, {}, None),
    ("post", "/v1/vector_stores"): ({}, {}, {"name": "docs", "file_ids": ["{file_id}"]}),
    ("get", "/v1/vector_stores"): ({}, {"limit": 5}, None),
    ("get", "/v1/vector_stores/{vector_store_id}"): ({}, {}, None),
    ("post", "/v1/vector_stores/{vector_store_id}"): ({}, {}, {"name": "renamed"}),
    ("delete", "/v1/vector_stores/{vector_store_id}"): ({}, {}, None),
    ("post", "/v1/vector_stores/{vector_store_id}/files"): ({}, {}, {"file_id": "{file_id}"}),
    ("get", "/v1/vector_stores/{vector_store_id}/files"): ({}, {"limit": 5}, None),
    ("get", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): ({}, {}, None),
    ("post", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): (
        {},
        {},
        {"attributes": {"lang": "en"}},
    ),
    ("delete", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): ({}, {}, None),
    ("get", "/v1/vector_stores/{vector_store_id}/files/{file_id}/content"): ({}, {}, None),
    ("post", "/v1/vector_stores/{vector_store_id}/file_batches"): (
        {},
        {},
        {"file_ids": ["{file_id}"]},
    ),
    ("get", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}"): ({}, {}, None),
    ("post", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"): (
        {},
        {},
        None,
    ),
    ("get", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"): (
        {},
        {"limit": 5},
        None,
    ),
    ("post", "/v1/vector_stores/{vector_store_id}/search"): ({}, {}, {"query": "hello"}),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> Iterator[ServerProcess]:
    """A server with an API key, a small body limit and no catalog (nothing leaves this machine),
    and two copies of the model to delete."""
    home = tmp_path_factory.mktemp("openapi")
    models = home / "models"
    models.mkdir()
    for name in ("first-copy.gguf", "second-copy.gguf"):
        shutil.copy(embedded_model, models / name)
    s = ServerProcess(
        models_dir=models,
        log_path=home / "server.log",
        args=[
            "--api-key",
            KEY,
            "--max-body-size",
            str(MAX_BODY),
            "--max-file-size",
            str(MAX_FILE),
            "--catalog-url",
            "",
        ],
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def doc(srv: ServerProcess) -> dict[str, Any]:
    r = httpx.get(srv.base_url + "/openapi.json", headers=AUTH)
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=300) as c:
        yield c


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of the document; deletes last (the deepest path first), so that
    what they delete is used first."""
    ops = [(m, p) for p, item in doc["paths"].items() for m in item]
    return sorted(ops, key=lambda op: (op[0] == "delete", -op[1].count("/")))


def schema_matches(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """Whether `value` validates against `schema`, whose `#/components/...` refs point into
    `doc`."""
    root = {**schema, "components": doc.get("components", {})}
    cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
    return cls(root).is_valid(value)


def assert_documented(doc: dict[str, Any], method: str, path: str, r: httpx.Response) -> None:
    """The answer's status is documented for this operation, and its body matches that status'
    schema for its content type."""
    op = doc["paths"][path][method]
    where = f"{method.upper()} {path} -> {r.status_code}: {r.text[:300]}"
    assert str(r.status_code) in op["responses"], f"undocumented status: {where}"
    content = op["responses"][str(r.status_code)].get("content", {})
    if not r.content:
        assert not content, f"an empty body where {list(content)} is documented: {where}"
        return
    ctype = r.headers["content-type"].split(";")[0].strip()
    assert ctype in content, f"undocumented content type {ctype} ({list(content)}): {where}"
    if ctype == "application/json":
        schema = content[ctype]["schema"]
        assert schema_matches(doc, schema, r.json()), f"body does not match {schema}: {where}"


def call(
    http: httpx.Client,
    method: str,
    path: str,
    params: dict[str, str],
    query: dict[str, Any] | None = None,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = path.format(**params)
    headers = AUTH if headers is None else headers
    if isinstance(body, tuple):  # a multipart upload: (form fields, files)
        return http.request(method, url, params=query, data=body[0], files=body[1], headers=headers)
    if raw is not None:
        headers = {**headers, "Content-Type": "application/json"}
        return http.request(method, url, params=query, content=raw, headers=headers)
    return http.request(method, url, params=query, json=body, headers=headers)


def localdocs_ids(http: httpx.Client) -> dict[str, str]:
    """A file, a vector store holding it and a file batch, for the LocalDocs operations."""
    upload = call(http, "post", "/v1/files", {}, body=UPLOAD)
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    store = call(http, "post", "/v1/vector_stores", {}, body={"name": "contract"})
    assert store.status_code == 200, store.text
    store_id = store.json()["id"]
    path = "/v1/vector_stores/{vector_store_id}/file_batches"
    batch = call(http, "post", path, {"vector_store_id": store_id}, body={"file_ids": [file_id]})
    assert batch.status_code == 200, batch.text
    return {"file_id": file_id, "vector_store_id": store_id, "batch_id": batch.json()["id"]}


def with_ids(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every string "{name}" replaced by `ids[name]`."""
    if isinstance(value, dict):
        return {k: with_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [with_ids(v, ids) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids.get(value[1:-1], value)
    return value


def body_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    return op["requestBody"]["content"]["application/json"]["schema"]


def test_no_422_and_every_error_has_its_dialects_schema(doc: dict[str, Any]) -> None:
    for method, path in operations(doc):
        responses = doc["paths"][path][method]["responses"]
        assert "422" not in responses, (method, path)
        assert "500" in responses, (method, path)
        wanted = (
            "AnthropicError"
            if path.startswith("/v1/messages")
            else "OllamaError"
            if path.startswith("/api/")
            else "OpenAIError"
        )
        for status, response in responses.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if int(status) >= 400 and "$ref" in schema:
                assert schema["$ref"].endswith("/" + wanted), (method, path, status)


def test_every_operation_answers_as_documented(
    doc: dict[str, Any], http: httpx.Client, srv: ServerProcess
) -> None:
    ops = operations(doc)
    assert {op for op in ops} == set(EXAMPLES), "an operation without an example, or the reverse"
    stored = call(http, "post", "/v1/responses", {}, body=EXAMPLES[("post", "/v1/responses")][2])
    assert stored.status_code == 200, stored.text
    ids = {"response_id": stored.json()["id"], **localdocs_ids(http)}
    seen: dict[tuple[str, str], set[int]] = {}
    for method, path in ops:
        op = doc["paths"][path][method]
        params, query, body = EXAMPLES[(method, path)]
        params = {**ids, **params}
        body = with_ids(body, ids)
        answers = []
        if isinstance(body, tuple):  # multipart: missing or bad fields, a file too large
            fields, files = body
            answers.append((call(http, method, path, params, body=(fields, {})), 400))
            answers.append((call(http, method, path, params, body=({"purpose": "x"}, files)), 400))
            big = {"file": ("big.md", b"x" * (MAX_FILE + 1))}
            answers.append((call(http, method, path, params, body=(fields, big)), 413))
            answers.append((call(http, method, path, params, raw=b" " * (MAX_FILE + 70_000)), 413))
        elif "requestBody" in op:
            schema = body_schema(doc, op)
            assert schema_matches(doc, schema, body), f"the example does not validate: {path}"
            unknown = {**body, "surely_not_a_field": 1}
            assert not schema_matches(doc, schema, unknown), f"{path} documents open bodies"
            for bad in (b"{not json", b'{"model": "x",}', b"[]"):
                answers.append((call(http, method, path, params, raw=bad), 400))
            answers.append((call(http, method, path, params, body=unknown), 400))
            answers.append((call(http, method, path, params, raw=b" " * (MAX_BODY + 1)), 413))
            if "model" in schema_properties(doc, schema):
                missing = {**body, "model": "no-such-model.gguf"}
                answers.append((call(http, method, path, params, body=missing), 404))
        for name in params:
            if "{" + name + "}" in path:
                unknown_id = {**params, name: "no-such-thing"}
                answers.append((call(http, method, path, unknown_id, query, body), 404))
        for p in op.get("parameters", []):
            if p["in"] == "query" and p["schema"].get("type") in ("integer", "boolean"):
                answers.append((call(http, method, path, params, {p["name"]: "abc"}), 400))
        if not is_open(method, path):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
                answers.append(
                    (call(http, method, path, params, query, body, headers=headers), 401)
                )
        answers.append((call(http, method, path, params, query, body), 200))
        ok = op["responses"]["200"].get("content", {})
        if body is not None and STREAM_TYPES & set(ok) and "application/json" in ok:
            streamed = call(http, method, path, params, query, {**body, "stream": True})
            answers.append((streamed, 200))
        for r, expected in answers:
            assert_documented(doc, method, path, r)
            assert r.status_code == expected, f"{method} {path}: {r.status_code} {r.text[:300]}"
            seen.setdefault((method, path), set()).add(r.status_code)
    assert all(200 in statuses for statuses in seen.values()), seen
    assert not (srv.models_dir / "first-copy.gguf").exists()


def test_unknown_routes_answer_404_in_their_dialects_shape(
    doc: dict[str, Any], http: httpx.Client
) -> None:
    schemas = doc["components"]["schemas"]
    for path, name in (
        ("/v1/nothing-here", "OpenAIError"),
        ("/v1/messages/nothing-here", "AnthropicError"),
        ("/api/nothing-here", "OllamaError"),
    ):
        r = http.get(path, headers=AUTH)
        assert r.status_code == 404
        assert schema_matches(doc, schemas[name], r.json()), (path, r.text)


def test_streams_are_documented_with_their_media_type(doc: dict[str, Any]) -> None:
    for path, media in (
        ("/v1/chat/completions", "text/event-stream"),
        ("/v1/completions", "text/event-stream"),
        ("/v1/responses", "text/event-stream"),
        ("/v1/messages", "text/event-stream"),
        ("/api/chat", "application/x-ndjson"),
        ("/api/generate", "application/x-ndjson"),
    ):
        content = doc["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", media}, path


def schema_properties(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    ref = schema.get("$ref", "")
    if ref:
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return set(schema.get("properties", {}))


def is_open(method: str, path: str) -> bool:
    return method == "get" and path in ("/health", "/ready")
