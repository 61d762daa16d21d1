"""Readiness, Prometheus metrics, request ids and the access log, against the real server."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import HTTP, ServerProcess

pytestmark = pytest.mark.e2e


EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"


def scrape(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """`/metrics` as {sample name: {sorted labels: value}}."""
    r = HTTP.get(base + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict[str, dict], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_ready_once_the_default_model_is_loaded(server: ServerProcess) -> None:
    r = HTTP.get(server.base_url + "/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["model"] == EMBEDDED
    if not body["loaded"]:  # unloaded for being idle (keep-alive) while other tests ran
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        assert HTTP.post(server.base_url + "/v1/chat/completions", json=chat).status_code == 200
        body = HTTP.get(server.base_url + "/ready").json()
    assert body["loaded"] is True
    assert body["waiting"] == 0
    assert HTTP.get(server.base_url + "/health").json()["status"] == "ok"


def test_metrics_after_generation(server: ServerProcess) -> None:
    base = server.base_url
    before = scrape(base)
    route = "/v1/chat/completions"
    n_before = value(before, "gpt4all_api_requests_total", method="POST", route=route, status="200")
    chat = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 12}
    assert HTTP.post(base + "/v1/chat/completions", json=chat).status_code == 200
    with HTTP.stream("POST", base + "/v1/chat/completions", json={**chat, "stream": True}) as r:
        assert r.status_code == 200
        assert any(line == "data: [DONE]" for line in r.iter_lines())
    assert HTTP.post(base + "/v1/chat/completions", json={"messages": []}).status_code == 400
    # a request is counted once its response has ended, which for the stream is just after the
    # client read [DONE]: scrape until both are in (or 5 s pass)
    deadline = time.monotonic() + 5
    while True:
        after = scrape(base)
        ok = value(after, "gpt4all_api_requests_total", method="POST", route=route, status="200")
        if ok >= n_before + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ok == n_before + 2
    assert value(after, "gpt4all_api_requests_total", method="POST", route=route, status="400") >= 1
    model = {"model": EMBEDDED}
    assert value(after, "gpt4all_api_loaded_models") >= 1
    assert value(after, "gpt4all_api_model_loaded", **model) == 1
    assert value(after, "gpt4all_api_slots", **model) == 16
    assert value(after, "gpt4all_api_kv_cache_capacity_tokens", **model) == 16 * 2048
    assert value(after, "gpt4all_api_kv_cache_tokens", **model) > 0
    assert 0 < value(after, "gpt4all_api_kv_cache_usage_ratio", **model) <= 1
    assert value(after, "gpt4all_api_queue_depth", **model) == 0
    assert "gpt4all_api_running_sequences" in after
    for name in ("prompt_tokens_total", "generated_tokens_total"):
        full = f"gpt4all_api_{name}"
        assert value(after, full, **model) > value(before, full, **model)
    ttft = "gpt4all_api_time_to_first_token_seconds_count"
    assert value(after, ttft, **model) >= value(before, ttft, **model) + 2
    tps = "gpt4all_api_generation_tokens_per_second_count"
    assert value(after, tps, **model) >= value(before, tps, **model) + 1
    assert value(after, "gpt4all_api_requests_in_progress") >= 1  # the scrape itself


def test_request_id_is_returned_and_in_error_bodies(server: ServerProcess) -> None:
    rid = f"client-{uuid.uuid4().hex[:8]}"
    r = HTTP.post(
        server.base_url + "/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
        headers={"X-Request-ID": rid},
    )
    assert r.status_code == 404
    assert r.headers["x-request-id"] == rid
    assert r.json()["error"]["request_id"] == rid
    r = HTTP.get(server.base_url + "/v1/models", headers={"X-Request-ID": "no spaces please"})
    made = r.headers["x-request-id"]
    assert made and made != "no spaces please"


def test_one_access_line_per_request_and_no_prompts_in_logs(server: ServerProcess) -> None:
    secret = f"zebra-{uuid.uuid4().hex}"
    rid = f"log-{uuid.uuid4().hex[:8]}"
    r = HTTP.post(
        server.base_url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": f"Repeat after me: {secret}"}],
            "max_tokens": 8,
        },
        headers={"X-Request-ID": rid},
    )
    assert r.status_code == 200
    reply = r.json()["choices"][0]["message"]["content"]
    line = ""
    for _ in range(50):  # the line is written as the response ends
        lines = [ln for ln in server.log_path.read_text().splitlines() if f"request_id={rid}" in ln]
        if lines:
            assert len(lines) == 1
            line = lines[0]
            break
        time.sleep(0.1)
    assert "gpt4all_api.access" in line
    fields = dict(part.split("=", 1) for part in line.split(": ", 1)[1].split())
    assert fields["method"] == "POST"
    assert fields["route"] == "/v1/chat/completions"
    assert fields["status"] == "200"
    assert float(fields["duration_ms"]) > 0
    assert fields["model"] == EMBEDDED
    assert int(fields["prompt_tokens"]) > 0
    assert 0 < int(fields["completion_tokens"]) <= 8
    assert float(fields["ttft_ms"]) > 0
    log = server.log_path.read_text()
    assert secret not in log
    if len(reply.strip()) > 12:
        assert reply.strip() not in log
    # a path with spaces and quotes cannot forge fields of its own
    HTTP.get(server.base_url + '/x y" status=999')
    time.sleep(0.3)
    assert "status=999 " not in server.log_path.read_text()
