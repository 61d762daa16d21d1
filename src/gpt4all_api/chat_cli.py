"""`gpt4all-api chat`: an interactive terminal chat that streams replies.

It talks to a running server (`--url`), or, without one, serves the app in this process on a free
loopback port (uvicorn in a background thread) and talks to that: both ways go through the same
HTTP API, so templates, validation and cancellation behave exactly as for any other client.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from .settings import Settings

HELP = """Commands:
  /reset          start a new conversation
  /system TEXT    set the system prompt (empty TEXT removes it) and start a new conversation
  /help           show this help
  /quit, /exit    leave (Ctrl-D too)
Ctrl-C stops a reply that is being written."""


class ChatError(Exception):
    """The server refused a request or could not be reached."""


def api_base(url: str) -> str:
    """`http://host:8000`, `http://host:8000/` or `http://host:8000/v1` -> `http://host:8000/v1`."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _error_text(response: httpx.Response) -> str:
    try:
        body = json.loads(response.read())
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    if response.status_code == 401:
        return f"the server needs a valid API key (--api-key): {message}"
    return f"{response.status_code}: {message}"


@dataclass
class Reply:
    """One streamed answer: its text so far and, at the end, the server's token counts."""

    text: str = ""
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    ended: float | None = None

    def summary(self) -> str:
        """`12 prompt + 40 completion tokens, 35.2 tokens/s`."""
        if self.usage is None or self.ended is None:
            return ""
        n = int(self.usage.get("completion_tokens", 0))
        since = self.first_token if self.first_token is not None else self.started
        seconds = self.ended - since
        rate = (n - 1) / seconds if n > 1 and seconds > 0 else 0.0
        return (
            f"{self.usage.get('prompt_tokens', 0)} prompt + {n} completion tokens, "
            f"{rate:.1f} tokens/s"
        )


class ChatClient:
    """Streams chat completions from an OpenAI-compatible server."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = api_base(base_url)
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
        )

    def close(self) -> None:
        self.http.close()

    def default_model(self) -> str | None:
        """The server's default model (or its first one)."""
        try:
            response = self.http.get("/models")
        except httpx.HTTPError as exc:
            raise ChatError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise ChatError(_error_text(response))
        models = response.json().get("data", [])
        for m in models:
            if m.get("default"):
                return str(m["id"])
        return str(models[0]["id"]) if models else None

    def stream(self, body: dict[str, Any], reply: Reply) -> Iterator[str]:
        """Yield the reply's text pieces as they arrive, filling in `reply` on the way."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self.http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise ChatError(_error_text(response))
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ChatError(chunk["error"].get("message", "generation failed"))
                    if chunk.get("usage"):
                        reply.usage = chunk["usage"]
                    for choice in chunk.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if reply.first_token is None:
                                reply.first_token = time.monotonic()
                            reply.text += piece
                            yield piece
                        if choice.get("finish_reason"):
                            reply.finish_reason = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise ChatError(f"connection to {self.base_url} failed: {exc}") from exc
        finally:
            reply.ended = time.monotonic()


@dataclass
class ChatSession:
    """The conversation loop: reads lines, sends them, streams the answers."""

    client: ChatClient
    model: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    history: list[dict[str, str]] = field(default_factory=list)

    def messages(self, text: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.history, {"role": "user", "content": text}]

    def command(self, line: str) -> bool:
        """Run a /command; False means: leave."""
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit", "/q"):
            return False
        if name in ("/reset", "/new", "/clear"):
            self.history.clear()
            self.err.write("(new conversation)\n")
        elif name == "/system":
            self.system = arg.strip() or None
            self.history.clear()
            self.err.write("(system prompt set; new conversation)\n")
        else:
            self.err.write(HELP + "\n")
        self.err.flush()
        return True

    def ask(self, text: str) -> Reply:
        """Send one user message and stream the answer to `out`. Ctrl-C stops it early."""
        body: dict[str, Any] = {"messages": self.messages(text), **self.params}
        if self.model:
            body["model"] = self.model
        reply = Reply()
        try:
            for piece in self.client.stream(body, reply):
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:
            self.out.write("\n")
            self.err.write("(stopped)\n")
        except ChatError as exc:
            self.out.write("\n")
            self.err.write(f"error: {exc}\n")
            self.err.flush()
            return reply
        else:
            self.out.write("\n")
            summary = reply.summary()
            if summary:
                self.err.write(f"[{summary}]\n")
        self.out.flush()
        self.err.flush()
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": reply.text},
        ]
        return reply

    def run(self, read_line: Callable[[str], str] = input) -> None:
        """Loop until /quit, Ctrl-D (end of input) or Ctrl-C at the prompt."""
        prompt = "> " if sys.stdin.isatty() else ""
        while True:
            try:
                line = read_line(prompt)
            except (EOFError, KeyboardInterrupt):
                self.out.write("\n")
                self.out.flush()
                return
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not self.command(text):
                    return
                continue
            self.ask(text)


def _free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LocalServer:
    """The app, served by uvicorn in a background thread on a free loopback port."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 600.0) -> None:
        """Serve the app and wait until its default model is loaded."""
        import uvicorn

        from .app import create_app

        app = create_app(self.settings)
        sock = _free_port()
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="chat-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    raise ChatError("the local server stopped while starting")
                try:
                    response = http.get(self.url + "/health")
                    if response.status_code == 200:
                        return
                    body = response.json()
                    if body.get("status") == "error":
                        raise ChatError(f"cannot load {body.get('model')}: {body.get('error')}")
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise ChatError(f"the local server was not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
