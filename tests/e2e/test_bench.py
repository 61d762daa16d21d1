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
        "--max-tokens", "16",
        "--threads", "1",
        "--parallel", "2",
        "--context-size", "1024",
        "--raw-seqs", "1,2",
        "--raw-reps", "1",
        "--prefix-tokens", "300",
        "--prefix-reps", "1",
        "--grounded-max-tokens", "8",
        "--json", str(out),
        "--plot", str(png),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "## Side by side" in proc.stdout and "## Targets" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["n_seq"] for r in data["raw"]] == [1, 2]
    assert all(r["tokens_per_s"] > 0 for r in data["raw"])
    # With the grounded workload: what a step of k tokens of one sequence costs.
    costs = data["step_costs"]
    # timed after as many tokens as a grounded answer's token has before it (the grounded
    # prompts have 200-380 tokens; the answers here at most 8)
    assert 200 < data["step_costs_context"] < 400
    assert f"One sequence with {data['step_costs_context']} tokens in its KV" in proc.stdout
    assert [c["tokens"] for c in costs] == [1, 2, 4, 8, 16, 32, 64]
    assert costs[0]["steps"] == 1 and all(c["ms"] > 0 and c["steps"] > 0 for c in costs)
    assert "speed-up if every draft were accepted" in proc.stdout
    # and prompt lookup's bound on our greedy grounded answers, were every draft right
    assert data["lookup_bound"] >= 1.0 and "Were every draft right" in proc.stdout
    assert f"were every draft right: {data['lookup_bound']:.2f}x" in proc.stdout  # the target's
    # and with our own guesses cut where they go wrong (never slower than plain decoding)
    assert len(data["guess_bound"]) == 1 and data["guess_bound"][0] >= 1.0
    assert "each cut exactly where it goes wrong" in proc.stdout
    assert set(data["servers"]) == {"gpt4all-api", "llama-cpp-python"}
    for srv in data["servers"].values():
        assert [lv["concurrency"] for lv in srv["levels"]] == [1, 2]
        for lv in srv["levels"]:
            assert lv["errors"] == 0 and lv["requests"] == 2
            assert lv["token_source"] == "tokenizer"  # llama-cpp-python streams no usage
            assert 0 < lv["output_tokens"] <= 32
            assert lv["peak_rss_mb"] > 50 and lv["server_cpu_s"] > 0
            assert 0 <= lv["other_cpu_s"] < lv["server_cpu_s"]
        # the threads that do not decode (HTTP, event loop) took some, not all, of it: over
        # both levels, as a level of two short answers may take less than the kernel's 10 ms
        # tick of CPU accounting outside the decode threads
        assert sum(lv["other_cpu_s"] for lv in srv["levels"]) > 0
        assert srv["prefix"]["warm"][0]["error"] is None
    ours = data["servers"]["gpt4all-api"]
    assert ours["prefix"]["warm"][0]["cached_tokens"] >= ours["prefix"]["prompt_tokens"][0]
    # The grounded workload ran on both: for ours prompt lookup on (the default: where drafts
    # pay), forced (every step) and off.
    assert [g["label"] for g in ours["grounded"]] == [
        "prompt lookup on",
        "prompt lookup forced",
        "prompt lookup off",
    ]
    assert [g["label"] for g in data["servers"]["llama-cpp-python"]["grounded"]] == ["greedy"]
    for g in (ours["grounded"][0], data["servers"]["llama-cpp-python"]["grounded"][0]):
        assert len(g["records"]) == 4 and all(r["error"] is None for r in g["records"])
        assert all(0 < r["counted_tokens"] <= 8 for r in g["records"])
        assert g["per_pass"] == 4  # one pass over the four prompts
    assert "## Grounded workload" in proc.stdout
    assert "pass 1 / later passes tok/s" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Stands in for llama.cpp's llama-server (no binary is built in the tests): it checks the flags
# the bench gives llama-server and serves the same model with our server, so that the plumbing
# (start, readiness, levels, ratio column) is exercised end to end.
FAKE_LLAMA_SERVER = """#!{python}
import argparse, os, sys
ap = argparse.ArgumentParser()
for f in ("--model", "--alias", "--host", "--port", "--threads", "--threads-batch",
          "--ctx-size", "--parallel", "--batch-size", "--ubatch-size", "-ctk", "-ctv", "-fa"):
    ap.add_argument(f)
ap.add_argument("--no-webui", action="store_true")
ap.add_argument("--no-repack", action="store_true")  # given where our repack=auto is off
a = ap.parse_args()
assert a.host == "127.0.0.1" and a.no_webui and a.fa == "on" and (a.ctk, a.ctv) == ("q8_0", "f16")
assert a.threads == a.threads_batch and a.batch_size == a.ubatch_size
assert int(a.ctx_size) % int(a.parallel) == 0
os.execv(sys.executable, [sys.executable, "-m", "gpt4all_api", "serve", "--host", a.host,
    "--port", a.port, "--models-dir", os.path.dirname(a.model), "--model", a.alias,
    "--threads", a.threads, "--parallel", a.parallel,
    "--context-size", str(int(a.ctx_size) // int(a.parallel)), "--batch-size", a.batch_size,
    "--kv-cache-type-k", a.ctk, "--kv-cache-type-v", a.ctv, "--log-level", "warning",
    "--repack", "off" if a.no_repack else "on"])
"""


@pytest.mark.slow
def test_bench_compare_with_llama_server_a_variant_the_hog_and_a_profile(tmp_path: Path) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text(FAKE_LLAMA_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    out, prof = tmp_path / "compare.json", tmp_path / "prof"
    proc = run_bench(
        "--compare",
        "--llama-server", str(fake),
        "--only", "gpt4all-api",
        "--only", "llama-server",
        "--variant", "passive=OMP_WAIT_POLICY=passive",
        "--levels", "2",
        "--requests-per-client", "1",
        "--min-requests", "2",
        "--max-tokens", "8",
        "--threads", "1",
        "--context-size", "1024",
        "--raw-reps", "0",
        "--no-prefix",
        "--grounded-passes", "0",
        "--hog", "1",
        "--profile", str(prof),
        "--profile-format", "raw",
        "--rounds", "2",
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    names = ["gpt4all-api", "gpt4all-api [passive]", "llama-server"]
    # then 2 rounds with all three up, and our engine in the bench's own process beside them
    # (no HTTP): each ran the level once a round
    assert list(data["interleaved"]) == [*names, "engine alone (no HTTP)"]
    for by_level in data["interleaved"].values():
        assert [lv["errors"] for lv in by_level["2"]] == [0, 0]
        assert all(0 < lv["output_tokens"] <= 16 for lv in by_level["2"])
        assert all(lv["ttft_p50"] is not None for lv in by_level["2"])
    assert "## Interleaved rounds (2:" in proc.stdout
    assert "| 2 | engine alone (no HTTP) |" in proc.stdout
    assert "- 2 client(s): server ÷ engine alone " in proc.stdout
    assert "2 client(s): >= 1.0x llama-server" not in proc.stdout  # only 1, 8, 16, 32 are goals
    assert list(data["servers"]) == names
    assert data["options"]["parallel"] == 2  # every server gets the top level's slots
    for srv in data["servers"].values():
        for lv in (*srv["levels"], *srv["hog_levels"]):
            assert lv["concurrency"] == 2 and lv["errors"] == 0 and lv["requests"] == 2
            assert 0 < lv["output_tokens"] <= 16 and lv["peak_rss_mb"] > 50
    assert "| 2 | llama-server |" in proc.stdout and "1.00x" in proc.stdout
    assert "## Beside a CPU hog (1 busy-looping processes)" in proc.stdout
    # py-spy recorded our two servers at the top level, idle and beside the hog.
    written = sorted(p.name for p in prof.iterdir())
    assert written == [
        "gpt4all-api-2c.txt",
        "gpt4all-api-beside-1-CPU-hog-s-2c.txt",
        "gpt4all-api-passive-2c.txt",
        "gpt4all-api-passive-beside-1-CPU-hog-s-2c.txt",
    ]
    assert "llama_decode" in (prof / "gpt4all-api-2c.txt").read_text()


def test_each_grounded_setting_starts_from_an_unloaded_model(base_url: str) -> None:
    """The grounded workload unloads our model before each setting, so that no setting drafts
    from the answers an earlier one gave; the unload is only done once `/api/ps` says so,
    also right after a request (when the server still holds the model for a moment)."""
    import httpx

    from gpt4all_api.bench.grounded import root_url, unload_model

    root = root_url(base_url)
    with httpx.Client(timeout=60) as http:
        model = http.get(base_url + "/models").json()["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert http.post(base_url + "/chat/completions", json=body).status_code == 200
        listed = [m["model"] for m in http.get(root + "/api/ps").json()["models"]]
        assert listed == [model.removesuffix(".gguf") + ":latest"]
        unload_model(http, root, model, None)
        assert http.get(root + "/api/ps").json()["models"] == []
        # and the next request loads it again
        assert http.post(base_url + "/chat/completions", json=body).status_code == 200
