"""The benchmark's statistics and stream parsing, on made-up records (no server, no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt4all_api.bench.config import OURS, THEIRS, BenchConfig
from gpt4all_api.bench.load import _on_chunk, check_loopback, history_messages
from gpt4all_api.bench.raw import RawResult
from gpt4all_api.bench.report import compare_text, to_json
from gpt4all_api.bench.runner import CompareReport, ServerReport
from gpt4all_api.bench.servers import ServerOptions
from gpt4all_api.bench.stats import (
    LevelResult,
    RequestRecord,
    cpu_ms_per_token,
    percentile,
    summarize,
    token_source,
)
from gpt4all_api.bench.targets import targets


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(101)), 95) == pytest.approx(95)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def record(start: float, times: list[float], usage: int | None, counted: int | None = None):
    return RequestRecord(
        started=start,
        finished=times[-1] if times else start,
        chunk_times=times,
        usage_completion=usage,
        counted_tokens=counted,
    )


def test_summarize_counts_tokens_and_latencies() -> None:
    recs = [
        record(0.0, [0.5, 0.6, 0.7, 0.8], usage=4, counted=4),
        record(0.0, [1.0, 1.2], usage=3, counted=2),
        RequestRecord(started=0.0, finished=0.1, error="HTTP 503: busy"),
    ]
    assert token_source(recs, have_tokenizer=False) == "usage"
    lv = summarize(2, recs, wall_s=2.0, source="usage")
    assert (lv.requests, lv.errors) == (2, 1)
    assert lv.output_tokens == 7 and lv.usage_tokens == 7 and lv.tokenizer_tokens == 6
    assert lv.tokens_per_s == pytest.approx(3.5)
    assert lv.requests_per_s == pytest.approx(1.0)
    assert lv.ttft_p50 == pytest.approx(0.75)  # 0.5 and 1.0
    assert lv.itl_p50 == pytest.approx(0.1)  # gaps 0.1, 0.1, 0.1, 0.2
    assert lv.itl_p95 == pytest.approx(0.185)
    assert lv.error_samples == ["HTTP 503: busy"]
    assert summarize(2, recs, 2.0, "tokenizer").output_tokens == 6
    assert summarize(2, recs, 2.0, "chunks").output_tokens == 6
    lv.server_cpu_s = 0.7
    assert cpu_ms_per_token(lv) == pytest.approx(100.0)
    assert cpu_ms_per_token(lv, outside_decode=True) is None  # not measured
    lv.other_cpu_s = 0.07
    assert cpu_ms_per_token(lv, outside_decode=True) == pytest.approx(10.0)


def test_token_source_falls_back_when_usage_is_missing() -> None:
    recs = [record(0.0, [0.1], usage=None), record(0.0, [0.1], usage=1)]
    assert token_source(recs, have_tokenizer=True) == "tokenizer"
    assert token_source(recs, have_tokenizer=False) == "chunks"


def test_stream_chunks_are_parsed() -> None:
    rec = RequestRecord(started=0.0)
    parts: list[str] = []
    _on_chunk(rec, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}, parts)
    _on_chunk(rec, {"choices": [{"delta": {"content": "Hel"}}]}, parts)
    _on_chunk(rec, {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]}, parts)
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 5},
    }
    _on_chunk(rec, {"choices": [], "usage": usage}, parts)
    assert parts == ["Hel", "lo"] and len(rec.chunk_times) == 2
    assert (rec.finish_reason, rec.usage_prompt, rec.usage_completion, rec.cached_tokens) == (
        "length",
        9,
        2,
        5,
    )
    _on_chunk(rec, {"error": {"message": "boom"}}, parts)
    assert rec.error and "boom" in rec.error


def test_every_level_request_samples_alike_on_every_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    import httpx

    from gpt4all_api.bench import load

    bodies: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        chunk = {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}
        return httpx.Response(200, text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")

    transport = httpx.MockTransport(answer)
    monkeypatch.setattr(load, "new_client", lambda *a, **k: httpx.AsyncClient(transport=transport))

    async def run(temperature: float) -> None:
        await load.run_level("http://127.0.0.1:1/v1", "m", 1, 1, 8, 10, None, temperature)

    asyncio.run(run(0.0))
    asyncio.run(run(0.7))
    greedy, sampled = bodies
    assert greedy["temperature"] == 0 and "top_k" not in greedy
    assert greedy["repeat_penalty"] == 1.0 and sampled["repeat_penalty"] == 1.0
    # above 0, the samplers llama.cpp's servers default to, spelled out for every server
    assert (sampled["temperature"], sampled["top_k"], sampled["top_p"], sampled["min_p"]) == (
        0.7,
        40,
        0.95,
        0.05,
    )


def test_only_loopback_servers_are_driven() -> None:
    check_loopback("http://127.0.0.1:8000/v1")
    check_loopback("http://localhost:1234/v1")
    with pytest.raises(ValueError):
        check_loopback("http://example.com/v1")


def test_history_is_unique_and_long() -> None:
    a, b = history_messages("aaa", 1500), history_messages("bbb", 1500)
    assert a[0] != b[0] and a[1:] == b[1:]
    assert sum(len(m["content"]) for m in a) > 1500 * 3


def level(c: int, tps: float, ttft: float, rss: float) -> LevelResult:
    return LevelResult(
        concurrency=c,
        requests=4,
        errors=0,
        wall_s=1.0,
        output_tokens=int(tps),
        usage_tokens=None,
        tokenizer_tokens=int(tps),
        token_source="tokenizer",
        tokens_per_s=tps,
        requests_per_s=4.0,
        ttft_p50=ttft,
        ttft_p95=ttft,
        itl_p50=0.01,
        itl_p95=0.02,
        peak_rss_mb=rss,
    )


def test_targets_and_report(tmp_path: Path) -> None:
    ours = ServerReport(
        OURS, "http://127.0.0.1:1/v1", "m", [level(1, 90, 0.1, 500), level(8, 160, 0.25, 500)]
    )
    theirs = ServerReport(
        THEIRS, "http://127.0.0.1:2/v1", "m", [level(1, 50, 0.1, 300), level(8, 30, 2.0, 300)]
    )
    report = CompareReport(
        config=BenchConfig(levels=(1, 8)),
        options=ServerOptions(model_path=tmp_path / "m.gguf", threads=2),
        raw=[RawResult(1, 64, [100.0]), RawResult(8, 64, [180.0])],
        servers={OURS: ours, THEIRS: theirs},
        machine={
            "cpu": "x",
            "cores": 2,
            "system": "s",
            "python": "3",
            "llama_cpp_python": "0",
            "load_average_at_start": [0.0],
        },
        started="now",
    )
    met = {what: ok for what, _, ok in targets(report)}
    assert met["1 client(s): >= 80% of raw 1-sequence decode"] is True
    assert met["1 client(s): >= 1.5x llama-cpp-python"] is True
    assert met["8 client(s): >= 85% of raw 8-sequence decode"] is True
    assert met["8 client(s): >= 4.0x llama-cpp-python"] is True
    assert met["p50 TTFT at 8 clients <= 3x at 1 client"] is True
    assert met["peak RSS at 8 clients <= 1.5x llama-cpp-python's"] is False
    assert met["2nd-turn TTFT >= 3x lower than cold (prefix reuse)"] is None
    text = compare_text(report)
    assert "| 8 | gpt4all-api | 160.0 | 5.33x | 250 | 250 | 10 | 500 | 0 |" in text
    data = json.loads(json.dumps(to_json(report)))
    assert data["servers"][OURS]["levels"][1]["tokens_per_s"] == 160
    assert data["raw"][1]["tokens_per_s"] == 180
