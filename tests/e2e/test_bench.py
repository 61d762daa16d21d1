"""`gpt4all-api bench` against the real server; `--compare` against llama-cpp-python's too.

Only sanity of the numbers is checked (counts, no errors, cached prefix), never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4all_api", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_against_our_server(base_url: str, embedded_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench(
        "--url", base_url,
        "--levels", "1,2",
        "--requests-per-client", "2",
        "--min-requests", "2",
        "--max-tokens", "8",
        "--prefix-tokens", "600",
        "--prefix-reps", "1",
        "--tokenizer", str(embedded_model),
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| clients | requests | errors |" in proc.stdout
    data = json.loads(out.read_text())
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 2]
    for lv, expected in zip(data["levels"], (2, 4), strict=True):
        assert lv["errors"] == 0 and lv["requests"] == expected
        assert lv["token_source"] == "usage"
        # Every request streams its usage; the bench counts exactly what the server reported.
        assert lv["output_tokens"] == lv["usage_tokens"]
        assert 0 < lv["output_tokens"] <= 8 * expected
        # Re-tokenizing the streamed text lands close to the server's own count.
        assert abs(lv["tokenizer_tokens"] - lv["usage_tokens"]) <= 2 * expected
        assert lv["tokens_per_s"] > 0 and lv["requests_per_s"] > 0
        assert 0 < lv["ttft_p50"] <= lv["ttft_p95"]
        assert 0 < lv["itl_p50"] <= lv["itl_p95"]
    prefix = data["prefix"]
    assert len(prefix["cold"]) == len(prefix["warm"]) == 1
    cold, warm = prefix["cold"][0], prefix["warm"][0]
    assert cold["error"] is None and warm["error"] is None
    assert cold["usage_prompt"] >= 500
    assert cold["cached_tokens"] < 50  # a new conversation shares only the template's opening
    # The second turn resends the first: its whole prompt (and the reply) comes from the cache.
    assert warm["cached_tokens"] >= cold["usage_prompt"]
    assert warm["usage_prompt"] > warm["cached_tokens"]
    assert prefix["speedup"] > 0


def test_bench_refuses_a_remote_url() -> None:
    proc = run_bench("--url", "http://example.com/v1", "--model", "m", "--levels", "1")
    assert proc.returncode != 0
    assert "loopback" in proc.stderr


@pytest.mark.slow
def test_bench_compare_runs_both_servers_and_raw_decode(tmp_path: Path) -> None:
    out, png = tmp_path / "compare.json", tmp_path / "compare.png"
    proc = run_bench(
        "--compare",
        "--levels", "1,2",
        "--requests-per-client", "1",
        "--min-requests", "2",
        "--max-tokens", "8",
        "--threads", "1",
        "--parallel", "2",
        "--context-size", "1024",
        "--raw-seqs", "1,2",
        "--raw-reps", "1",
        "--prefix-tokens", "300",
        "--prefix-reps", "1",
        "--json", str(out),
        "--plot", str(png),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "## Side by side" in proc.stdout and "## Targets" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["n_seq"] for r in data["raw"]] == [1, 2]
    assert all(r["tokens_per_s"] > 0 for r in data["raw"])
    assert set(data["servers"]) == {"gpt4all-api", "llama-cpp-python"}
    for srv in data["servers"].values():
        assert [lv["concurrency"] for lv in srv["levels"]] == [1, 2]
        for lv in srv["levels"]:
            assert lv["errors"] == 0 and lv["requests"] == 2
            assert lv["token_source"] == "tokenizer"  # llama-cpp-python streams no usage
            assert 0 < lv["output_tokens"] <= 16
            assert lv["peak_rss_mb"] > 50 and lv["server_cpu_s"] > 0
        assert srv["prefix"]["warm"][0]["error"] is None
    ours = data["servers"]["gpt4all-api"]
    assert ours["prefix"]["warm"][0]["cached_tokens"] >= ours["prefix"]["prompt_tokens"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
