"""The event stream's keep-alive comments and its end, through an ASGI client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpt4all_api.api.streaming import EventStream, joined, sse_response


def serve(make: Callable[[], Response]) -> httpx.AsyncClient:
    async def endpoint(request: Request) -> Response:
        return make()

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def slow_frames(delays: list[float]) -> AsyncIterator[bytes]:
    for i, delay in enumerate(delays):
        await asyncio.sleep(delay)
        yield b"data: %d\n\n" % i


async def fetch(make: Callable[[], Response]) -> httpx.Response:
    async with serve(make) as client:
        return await client.post("/")


def test_a_pause_longer_than_ping_gets_comments_and_a_steady_stream_none() -> None:
    r = asyncio.run(fetch(lambda: EventStream(slow_frames([0.0, 0.35, 0.0]), ping=0.1)))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-accel-buffering"] == "no"
    events = r.text.split("\n\n")
    assert events[0] == "data: 0"
    # about three pings in the 0.35 s pause (the scheduler may let one slip), then the rest
    assert 2 <= events.count(": ping") <= 4, events
    assert events[-3:] == ["data: 1", "data: 2", ""]
    steady = asyncio.run(fetch(lambda: EventStream(slow_frames([0.02] * 10), ping=0.1)))
    assert ": ping" not in steady.text
    assert steady.text.count("data: ") == 10


def test_openai_streams_end_with_done_and_errors_in_their_dialects_shape() -> None:
    async def chunks() -> AsyncIterator[dict]:
        yield {"a": 1}
        raise RuntimeError("boom")

    r = asyncio.run(fetch(lambda: sse_response(chunks())))
    frames = r.text.split("\n\n")
    assert frames[0] == 'data: {"a":1}'
    assert frames[1].startswith('data: {"error":')
    assert frames[2:] == ["data: [DONE]", ""]
    r = asyncio.run(fetch(lambda: sse_response(chunks(), "anthropic")))
    assert r.text.split("\n\n")[1].startswith('event: error\ndata: {"type":"error"')


def test_frames_made_while_more_events_wait_go_out_in_one_write() -> None:
    # `ready` says how many events wait: frames made while some do are held and joined, the
    # frame after which none waits goes out with them, at once
    waiting = [2, 1, 0, 0, 3, 2, 1, 0]

    async def frames() -> AsyncIterator[bytes]:
        for i in range(len(waiting)):
            state["i"] = i
            yield b"data: %d\n\n" % i

    state = {"i": 0}

    async def collect() -> list[bytes]:
        return [f async for f in joined(frames(), lambda: waiting[state["i"]])]

    sent = asyncio.run(collect())
    assert sent == [
        b"data: 0\n\ndata: 1\n\ndata: 2\n\n",
        b"data: 3\n\n",
        b"data: 4\n\ndata: 5\n\ndata: 6\n\ndata: 7\n\n",
    ]
    # held frames are not lost when the frames end while events are still said to wait
    waiting[:] = [1, 1]
    assert asyncio.run(collect()) == [b"data: 0\n\ndata: 1\n\n"]


def test_a_joined_event_stream_reads_as_the_same_events() -> None:
    async def chunks() -> AsyncIterator[dict]:
        for i in range(5):
            yield {"i": i}

    r = asyncio.run(fetch(lambda: sse_response(chunks(), ready=lambda: 1)))
    assert r.text == "".join(f'data: {{"i":{i}}}\n\n' for i in range(5)) + "data: [DONE]\n\n"
