"""The OpenAPI document follows the server's settings (built in-process, nothing served)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpt4all_api.app import create_app
from gpt4all_api.settings import Settings


def document(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return create_app(Settings(models_dir=tmp_path, **settings)).openapi()


def test_401_only_when_keys_are_on_and_never_on_the_probes(tmp_path: Path) -> None:
    open_doc, keyed = document(tmp_path), document(tmp_path, api_keys=["k"])
    chat = "/v1/chat/completions"
    assert "401" not in open_doc["paths"][chat]["post"]["responses"]
    assert "401" in keyed["paths"][chat]["post"]["responses"]
    assert "401" not in keyed["paths"]["/health"]["get"]["responses"]


def test_request_bodies_are_open_only_when_unknown_fields_are_dropped(tmp_path: Path) -> None:
    strict = document(tmp_path)["components"]["schemas"]
    lenient = document(tmp_path, reject_unknown_fields=False)["components"]["schemas"]
    for name in ("ChatCompletionRequest", "ResponsesRequest", "ChatRequest", "CountTokensRequest"):
        assert strict[name]["additionalProperties"] is False, name
        assert lenient[name]["additionalProperties"] is True, name
    # a chat message's unknown fields are refused whatever the setting
    assert lenient["ChatMessage"]["additionalProperties"] is False


def test_error_statuses_follow_what_an_operation_does(tmp_path: Path) -> None:
    paths = document(tmp_path)["paths"]

    def statuses(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert statuses("post", "/v1/chat/completions") == {
        "200", "400", "404", "413", "500", "503", "504"
    }  # fmt: skip
    assert statuses("get", "/v1/models") == {"200", "500"}
    assert statuses("delete", "/v1/models/{model_id}") >= {"404", "409"}
    assert statuses("post", "/api/pull") >= {"502", "507"}
    assert "503" in statuses("get", "/health")
    error = paths["/v1/chat/completions"]["post"]["responses"]["503"]
    assert "Retry-After" in error["headers"]
