"""Claude Code and Codex CLI run whole sessions against the real server and model.

Both clients are installed from npm at pinned versions into a cache folder the first time
(about 15 s). Their telemetry and every other outside call are off: a temporary HOME and
CODEX_HOME, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`, Codex's analytics and plugins off.
The 135M model's words do not matter; each session must go through the protocol to a normal end,
and its second request must find the first one's long prefix in the KV cache.

A session's first request prefills the agent's whole system prompt and tools (about 12,000
tokens for Claude Code, 6,500 for Codex): minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

M = "SmolLM2-135M-Instruct.Q4_1.gguf"
CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.332"
CODEX = "@openai/codex@0.169.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt4all-api-tests"
SESSION_TIMEOUT = 1500  # seconds for one agent command (a cold 12,000-token prefill included)
_ACCESS = re.compile(r"gpt4all_api\.access: (.*)$")


@pytest.fixture(scope="module")
def agents_bin() -> Path:
    """The npm binaries of both clients, installed once into the cache folder."""
    prefix = CACHE / "npm-agents"
    bin_dir = prefix / "node_modules" / ".bin"
    wanted = prefix / "versions"
    pins = f"{CLAUDE_CODE} {CODEX}"
    if not (wanted.exists() and wanted.read_text() == pins and (bin_dir / "codex").exists()):
        npm = shutil.which("npm")
        assert npm, "npm (Node.js 20) is needed to install the coding agents"
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                CLAUDE_CODE,
                CODEX,
            ],
            check=True,
            timeout=900,
            stdout=subprocess.DEVNULL,
        )
        wanted.write_text(pins)
    return bin_dir


def _server(home: Path, models_dir: Path, *extra: str) -> ServerProcess:
    """A server sized for coding agents, as the README says to start one."""
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=home / "server.log",
        # greedy by default (neither agent sends a temperature): at 1.0 the 135M model can write
        # until the context is full. Greedy too it sometimes does (with flash attention off the
        # answer may change with the batching): about 10,000 tokens, which flash attention off
        # generates in minutes; with it on, at 5-7 tok/s past 6,000 tokens, Codex's turn ran
        # past the 25-minute limit.
        args=[
            "--context-size",
            "16384",
            "--parallel",
            "2",
            "--request-timeout",
            "0",
            "--temperature",
            "0",
            "--flash-attention",
            "off",
            *extra,
        ],
    )
    return srv.start()


@pytest.fixture(scope="module")
def agent_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[ServerProcess]:
    srv = _server(tmp_path_factory.mktemp("agents"), models_dir)
    yield srv
    srv.stop()


def access_lines(server: ServerProcess, route: str) -> list[dict[str, str]]:
    """The access-log fields of each finished request on `route`."""
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        m = _ACCESS.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(1).split(" ") if "=" in kv)
            if fields.get("route") == route:
                out.append(fields)
    return out


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "DISABLE_TELEMETRY": "1",
        **extra,
    }


def _run(
    cmd: list[str], env: dict[str, str], cwd: Path, server: ServerProcess
) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SESSION_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        # what the server finished meanwhile (a request is logged when it ends)
        log = server.log_path.read_text(errors="replace").splitlines()
        pytest.fail(
            f"{cmd[0].rsplit('/', 1)[-1]} ran past {SESSION_TIMEOUT}s; its stderr: "
            f"{(exc.stderr or b'')[-2000:]!r}; the server's log ends:\n" + "\n".join(log[-20:])
        )
    print(f"{cmd[0].rsplit('/', 1)[-1]} took {time.monotonic() - started:.0f}s")
    print("stdout:", done.stdout[-3000:])
    print("stderr:", done.stderr[-3000:])
    return done


def _assert_prefix_reused(server: ServerProcess, route: str, at_least: int = 0) -> None:
    # with usage: a request its client gave up on ends without (Claude Code gave up on its
    # cold 12,000-token first request after a 750 s prefill with q8_0 keys and flash attention
    # on a 2-core Xeon; its retry found that prefill in the KV cache)
    lines = [
        f for f in access_lines(server, route) if f.get("status") == "200" and "prompt_tokens" in f
    ]
    print(*(" ".join(f"{k}={v}" for k, v in f.items()) for f in lines), sep="\n")
    assert len(lines) >= 2, lines
    first, last = lines[0], lines[-1]
    assert int(first["prompt_tokens"]) > at_least
    # the session's later request found the first one's prefix in the KV cache
    assert int(last["cached_tokens"]) >= int(first["prompt_tokens"]) * 0.9


def _claude(agents_bin: Path, server: ServerProcess, tmp_path: Path, *args: str) -> list[dict]:
    """Run `claude -p` commands of one session; their JSON results."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = _clean_env(
        home,
        ANTHROPIC_BASE_URL=server.base_url,
        ANTHROPIC_API_KEY="x",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    claude = str(agents_bin / "claude")
    common = ["--output-format", "json", "--model", M, "--max-turns", "1", *args]
    results = []
    for prompt in (["-p", "Say hi"], ["-p", "--continue", "Say bye"]):
        done = _run([claude, *prompt, *common], env, work, server)
        results.append({**json.loads(done.stdout), "returncode": done.returncode})
    return results


def test_claude_code_session(agents_bin: Path, agent_server: ServerProcess, tmp_path: Path) -> None:
    """A whole session (two turns) to a normal end. Claude Code's headers, betas, `thinking`,
    `context_management`, `output_config`, `metadata`, billing block and streaming as it sends
    them, with a short system prompt and no tools so that the 135M model answers and stops."""
    results = _claude(
        agents_bin,
        agent_server,
        tmp_path,
        "--bare",
        "--tools",
        "",
        "--system-prompt",
        "Answer in one short sentence.",
    )
    for result in results:
        # not an API error: a normal end, or the turn limit when the model called a tool
        assert result["subtype"] in ("success", "error_max_turns"), result
        if result["subtype"] == "success":
            assert result["is_error"] is False and result["returncode"] == 0, result
            assert result["stop_reason"] in ("end_turn", "stop_sequence"), result
    _assert_prefix_reused(agent_server, "/v1/messages")


def test_claude_code_default_request_is_served(
    agents_bin: Path, tmp_path: Path, models_dir: Path
) -> None:
    """Claude Code's default request (its whole system prompt and 12 tools, 12,000 tokens,
    `max_tokens: 32000`) is served, not refused, and the session's later requests reuse its
    prefix. The 135M model does not end a turn at that length, so the server caps replies at
    32 tokens (`--max-tokens-limit`): Claude Code then asks for continuations until it gives up
    on the output limit, which is the model's shortfall, not an API error."""
    srv = _server(tmp_path, models_dir, "--max-tokens-limit", "32")
    try:
        results = _claude(agents_bin, srv, tmp_path)
    finally:
        srv.stop()
    lines = access_lines(srv, "/v1/messages")
    assert lines and all(f["status"] == "200" for f in lines), lines
    for result in results:
        assert result.get("api_error_status") is None, result  # no HTTP error from the server
        assert result["is_error"] is False or "output token maximum" in result["result"], result
    _assert_prefix_reused(srv, "/v1/messages", at_least=10_000)


def test_codex_session(agents_bin: Path, agent_server: ServerProcess, tmp_path: Path) -> None:
    home, codex_home, work = tmp_path / "home", tmp_path / "codex", tmp_path / "work"
    for d in (home, codex_home, work):
        d.mkdir()
    env = _clean_env(home, CODEX_HOME=str(codex_home))
    provider = (
        'model_providers.local={name="local",base_url="'
        + agent_server.base_url
        + '/v1",wire_api="responses",request_max_retries=0,stream_max_retries=0,'
        # a cold prefill of Codex's 6,500-token prompt sends no event for minutes on 2 cores
        + "stream_idle_timeout_ms=1800000}"
    )
    flags = [
        "--skip-git-repo-check",
        "-c",
        "analytics.enabled=false",
        "--disable",
        "plugins",
        "-c",
        "model_provider=local",
        "-c",
        provider,
        "-m",
        M,
    ]
    codex = str(agents_bin / "codex")
    first = _run([codex, "exec", *flags, "Say hi"], env, work, agent_server)
    assert first.returncode == 0, first.stderr
    second = _run([codex, "exec", *flags, "resume", "--last", "Say bye"], env, work, agent_server)
    assert second.returncode == 0, second.stderr
    for done in (first, second):  # Codex reports connection and protocol errors as "ERROR:"
        assert "ERROR" not in done.stderr, done.stderr
        assert done.stdout.strip()  # the final message
    _assert_prefix_reused(agent_server, "/v1/responses", at_least=4000)
