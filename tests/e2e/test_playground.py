"""The playground page in real headless Chromium (Playwright) against the real server and model."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from conftest import ServerProcess
from fixtures.catalog_server import CatalogServer, fixture_files

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMBEDDED = "SmolLM2-135M-Instruct.Q4_1.gguf"
TIMEOUT_MS = 120_000  # the machine is shared; replies can be slow
REPLY = "#messages .message.assistant"
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield pg
    context.close()
    assert errors == [], f"errors on the page: {errors}"


def idle(base: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until no model has a busy slot or a waiting request; return the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(base + "/v1/stats", headers=headers, timeout=10).json()
        busy = [(m["busy_slots"], m["waiting"]) for m in stats["models"].values()]
        if all(b == (0, 0) for b in busy) or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def open_page(page: Any, server: ServerProcess) -> None:
    page.goto(server.base_url + "/")
    expect(page.locator("#model option")).not_to_have_count(0)


def wait_longer(locator: Any, than: int, timeout: float = TIMEOUT_MS / 1000) -> str:
    """Wait until the locator's text is longer than `than` characters; return it."""
    deadline = time.monotonic() + timeout
    while True:
        text = locator.text_content() or ""
        if len(text) > than or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_page_and_assets_are_served_from_the_package(server: ServerProcess) -> None:
    r = httpx.get(server.base_url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        asset = httpx.get(f"{server.base_url}/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert httpx.head(server.base_url + "/").status_code == 200
    missing = httpx.get(server.base_url + "/static/../app.py")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_chat_streams_stops_and_reports_usage(
    page: Any, server: ServerProcess, tmp_path: Path
) -> None:
    open_page(page, server)
    assert page.input_value("#model") == EMBEDDED  # the server's default is preselected
    page.fill("#system", "You are a storyteller who writes very long stories.")
    page.fill("#temperature", "0")  # greedy: this story runs far past the point we stop it
    expect(page.locator("#temperature-value")).to_have_text("0")
    page.fill("#max-tokens", "1500")
    page.fill("#prompt", "Write a very long story about a dragon who learns to cook.")
    page.press("#prompt", "Enter")

    reply = page.locator(REPLY).last
    content = reply.locator(".content")
    # Text appears while the reply is still streaming, and keeps growing.
    expect(content).to_have_text(re.compile(r"\S"))
    first = content.text_content() or ""
    assert len(wait_longer(content, max(len(first), 60))) > len(first)
    assert "streaming" in (reply.get_attribute("class") or "")
    assert page.is_enabled("#stop") and not page.is_enabled("#send")

    page.click("#stop")
    page.wait_for_selector(f"{REPLY}[data-state='stopped']")
    stopped = content.text_content() or ""
    assert len(stopped) > len(first)
    assert "Stopped after" in (reply.locator(".meta").text_content() or "")
    assert page.is_enabled("#send") and not page.is_enabled("#stop")

    # The abort freed the server slot: nothing stays busy, nothing more is generated.
    stats = idle(server.base_url)
    engine = stats["models"][EMBEDDED]
    assert engine["busy_slots"] == 0 and engine["waiting"] == 0, stats
    time.sleep(1.0)
    again = idle(server.base_url)["models"][EMBEDDED]
    assert again["generated_tokens"] == engine["generated_tokens"]
    assert content.text_content() == stopped

    # The conversation goes on after a stop; a full reply shows its token usage and speed.
    page.fill("#max-tokens", "12")
    page.fill("#prompt", "Now say hello.")
    page.click("#send")
    page.wait_for_selector(f"{REPLY}[data-state='done']")
    meta = page.locator(REPLY).last.locator(".meta").text_content() or ""
    assert "completion tokens" in meta and "tokens/s" in meta, meta
    assert page.locator("#messages .message").count() == 4

    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"\nplayground screenshot: {shot}")

    page.click("#new-chat")
    assert page.locator("#messages .message").count() == 0
    assert page.is_visible("#chat-empty")


def test_user_and_model_text_is_never_html(page: Any, server: ServerProcess) -> None:
    open_page(page, server)
    attack = "<img src=x onerror=\"document.title='owned'\"><b>bold</b>"
    page.fill("#max-tokens", "4")
    page.fill("#prompt", attack)
    page.click("#send")
    page.wait_for_selector(f"{REPLY}[data-state='done']")
    assert page.locator("#messages img, #messages b").count() == 0
    assert page.locator("#messages .message.user .content").text_content() == attack
    assert page.title() != "owned"


def test_api_key_box_sends_bearer_and_explains_401(
    page: Any, models_dir: Path, tmp_path: Path
) -> None:
    srv = ServerProcess(
        models_dir=models_dir,
        log_path=tmp_path / "keyed.log",
        args=["--api-key", "sk-playground", "--parallel", "2"],
    )
    srv.start()
    try:
        page.goto(srv.base_url + "/")  # the page itself needs no key
        expect(page.locator("#notice")).to_contain_text("needs an API key")

        page.fill("#api-key", "sk-wrong")
        page.dispatch_event("#api-key", "change")
        expect(page.locator("#notice")).to_contain_text("refused the API key")

        page.fill("#api-key", "sk-playground")
        page.dispatch_event("#api-key", "change")
        expect(page.locator("#model option")).not_to_have_count(0)
        expect(page.locator("#notice")).to_be_hidden()
        page.fill("#max-tokens", "6")
        page.fill("#prompt", "Hi")
        page.click("#send")
        page.wait_for_selector(f"{REPLY}[data-state='done']")

        # The key is remembered by the browser, and sent again after a reload.
        page.reload()
        assert page.input_value("#api-key") == "sk-playground"
        expect(page.locator("#model option")).not_to_have_count(0)
        expect(page.locator("#notice")).to_be_hidden()
    finally:
        srv.stop()


def test_catalog_tab_against_the_real_server(page: Any, server: ServerProcess) -> None:
    real = httpx.get(server.base_url + "/v1/catalog", timeout=60)
    open_page(page, server)
    page.click("#tab-catalog")
    assert page.is_visible("#view-catalog") and page.is_hidden("#view-chat")
    if real.status_code == 404:
        expect(page.locator("#catalog-status")).to_contain_text("Catalog not available")
    else:
        assert real.status_code == 200, real.text
        count = len(real.json()["data"])
        expect(page.locator("#catalog-status")).to_have_text(re.compile(f"^{count} models"))
        assert page.locator("#catalog-list > li").count() == count
    page.click("#tab-chat")
    assert page.is_visible("#view-chat")


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path
) -> Iterator[tuple[CatalogServer, ServerProcess]]:
    """A local stand-in for gpt4all.io (slowed down) and a server whose catalog comes from it."""
    home = tmp_path_factory.mktemp("playground-library")
    copy = home / "smol-test.gguf"
    shutil.copy(embedded_model, copy)
    upstream = CatalogServer(files=fixture_files(copy), model=copy, rate=25e6).start()
    (home / "models").mkdir()
    srv = ServerProcess(
        models_dir=home / "models",
        log_path=home / "server.log",
        args=["--parallel", "2"],
        env={"GPT4ALL_API_CATALOG_URL": upstream.catalog_url},
    )
    try:
        srv.start()
        yield upstream, srv
    finally:
        srv.stop()
        upstream.stop()


def catalog_item(page: Any, name: str) -> Any:
    item = page.locator("#catalog-list > li").filter(
        has=page.locator("h3", has_text=re.compile(f"^{re.escape(name)}$"))
    )
    expect(item).to_have_count(1)
    return item


def test_catalog_downloads_a_model_with_progress(
    page: Any, library: tuple[CatalogServer, ServerProcess]
) -> None:
    upstream, srv = library
    open_page(page, srv)
    page.click("#tab-catalog")
    item = catalog_item(page, "Smol Test")
    button = item.locator("button")
    expect(button).to_have_text("Download")
    button.click()

    # The bar moves: some progress is seen before the end.
    progress = item.locator("progress")
    seen: set[float] = set()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while button.text_content() != "Installed" and time.monotonic() < deadline:
        state = progress.evaluate("p => p.hasAttribute('value') ? p.value / p.max : -1")
        if 0 < state < 1:
            seen.add(round(state, 3))
        time.sleep(0.05)
    expect(button).to_have_text("Installed")
    expect(button).to_be_disabled()
    assert seen, "no intermediate progress was shown"
    assert progress.evaluate("p => p.value === p.max")
    assert upstream.file_requests("smol-test.gguf")

    # The new model is on disk, in the catalog as installed, and in the chat's model picker.
    assert (srv.models_dir / "smol-test.gguf").stat().st_size == upstream.model.stat().st_size
    page.click("#catalog-refresh")
    expect(catalog_item(page, "Smol Test").locator("button")).to_have_text("Installed")
    page.click("#tab-chat")
    expect(page.locator("#model option[value='smol-test.gguf']")).to_have_count(1)
    page.select_option("#model", "smol-test.gguf")
    page.fill("#max-tokens", "6")
    page.fill("#prompt", "Hello")
    page.click("#send")
    page.wait_for_selector(f"{REPLY}[data-state='done']")
    assert "smol-test.gguf" in idle(srv.base_url)["models"]


def test_catalog_download_failure_offers_retry(
    page: Any, library: tuple[CatalogServer, ServerProcess]
) -> None:
    _, srv = library
    open_page(page, srv)
    page.click("#tab-catalog")
    item = catalog_item(page, "Smol Corrupt")
    item.locator("button").click()
    expect(item.locator("button")).to_have_text("Retry")
    expect(item.locator("button")).to_be_enabled()
    expect(item.locator(".progress-text")).to_contain_text(
        re.compile("checksum|sha256|md5", re.IGNORECASE)
    )
    assert not (srv.models_dir / "smol-corrupt.gguf").exists()


CATALOG = {
    "object": "list",
    "offline": False,
    "fetched_at": 1_700_000_000,
    "data": [
        {
            "id": "tiny.gguf",
            "object": "catalog_model",
            "name": "Tiny <i>model</i>",
            "filename": "tiny.gguf",
            "filesize": 3000,
            "ramrequired": 1,
            "parameters": "135 million",
            "quant": "q4_1",
            "type": "llama",
            "description": "<ul><li>Fast</li><li><script>document.title='owned'</script></li></ul>",
            "installed": False,
            "downloading": False,
        },
        {
            "id": "have.gguf",
            "object": "catalog_model",
            "name": "Installed one",
            "filename": "have.gguf",
            "filesize": None,
            "ramrequired": None,
            "parameters": None,
            "quant": None,
            "type": None,
            "description": None,
            "installed": True,
            "downloading": False,
        },
    ],
}


def _frames(*events: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def test_catalog_download_progress(page: Any, server: ServerProcess) -> None:
    """The catalog tab drives its progress bar from the pull stream (contract frames)."""
    pulls: list[dict[str, Any]] = []

    def pull(route: Any) -> None:
        pulls.append(json.loads(route.request.post_data or "{}"))
        frames = [
            {"status": "starting", "model": "tiny.gguf", "completed": 0, "total": 3000},
            {"status": "downloading", "model": "tiny.gguf", "completed": 1500, "total": 3000,
             "bytes_per_second": 1500.0},
            {"status": "downloading", "model": "tiny.gguf", "completed": 3000, "total": 3000,
             "bytes_per_second": 1500.0},
            {"status": "verifying", "model": "tiny.gguf", "completed": 3000, "total": 3000},
            {"status": "success", "model": "tiny.gguf", "completed": 3000, "total": 3000},
        ]  # fmt: skip
        route.fulfill(status=200, content_type="text/event-stream", body=_frames(*frames))

    page.route("**/v1/catalog", lambda route: route.fulfill(json=CATALOG))
    page.route("**/v1/models/pull", pull)
    open_page(page, server)
    page.click("#tab-catalog")
    items = page.locator("#catalog-list > li")
    items.first.wait_for()
    assert items.count() == 2
    expect(page.locator("#catalog-status")).to_have_text(re.compile("^2 models"))
    first = items.nth(0)
    assert first.locator("h3").text_content() == "Tiny <i>model</i>"
    assert (first.locator(".description").text_content() or "").startswith("• Fast")
    assert "owned" not in (first.text_content() or "")
    assert page.locator("#catalog-list script, #catalog-list i, #catalog-list li li").count() == 0
    assert "135 million" in (first.locator(".facts").text_content() or "")
    assert items.nth(1).locator("button").is_disabled()

    first.locator("button").click()
    first.locator("button", has_text="Installed").wait_for()
    progress = first.locator("progress")
    assert progress.evaluate("p => p.value === p.max")
    assert first.locator(".progress-text").text_content() == "Installed"
    assert pulls == [{"model": "tiny.gguf"}]
    assert page.title() != "owned"


def test_catalog_pull_error_is_shown(page: Any, server: ServerProcess) -> None:
    error = {"message": "checksum mismatch", "type": "server_error", "param": None, "code": "x"}
    body = _frames(
        {"status": "starting", "model": "tiny.gguf", "completed": 0, "total": 3000},
        {"status": "error", "model": "tiny.gguf", "error": error},
    )
    page.route("**/v1/catalog", lambda route: route.fulfill(json=CATALOG))
    page.route(
        "**/v1/models/pull",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    open_page(page, server)
    page.click("#tab-catalog")
    button = page.locator("#catalog-list > li").first.locator("button")
    button.click()
    page.locator("#catalog-list > li").first.locator("button", has_text="Retry").wait_for()
    text = page.locator("#catalog-list > li").first.locator(".progress-text").text_content()
    assert text == "checksum mismatch"


def test_catalog_missing_endpoint_is_graceful(page: Any, server: ServerProcess) -> None:
    missing = {"error": {"message": "Unknown route", "type": "invalid_request_error"}}
    page.route("**/v1/catalog", lambda route: route.fulfill(status=404, json=missing))
    open_page(page, server)
    page.click("#tab-catalog")
    expect(page.locator("#catalog-status")).to_have_text("Catalog not available on this server.")
    assert page.locator("#catalog-list > li").count() == 0


def test_documents_tab_indexes_files_and_chat_shows_sources(
    page: Any, server: ServerProcess, tmp_path: Path
) -> None:
    note = tmp_path / "ferry.md"
    note.write_text("The ferry to <b>Elba</b> leaves at 7:40 from pier 4.")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 cut short")
    open_page(page, server)
    page.click("#tab-docs")
    assert page.is_visible("#view-docs") and page.is_hidden("#view-chat")
    page.fill("#docs-name", "trips")
    page.set_input_files("#docs-files", [str(note), str(broken)])
    page.click("#docs-upload")
    expect(page.locator("#docs-status")).to_have_text("trips: 1 files indexed, 1 failed")
    expect(page.locator("#docs-list")).to_contain_text("trips")

    page.click("#tab-chat")
    page.select_option("#localdocs", "trips")
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "When does the ferry to Elba leave?")
    page.press("#prompt", "Enter")
    reply = page.locator(REPLY).last
    expect(reply).to_have_attribute("data-state", "done")
    sources = reply.locator(".sources")
    expect(sources.locator("summary")).to_have_text("Sources (1)")
    sources.locator("summary").click()
    expect(sources.locator("li strong")).to_have_text("ferry.md")
    # the passage is shown as text, never as HTML
    expect(sources.locator("li p")).to_contain_text("<b>Elba</b>")
    assert sources.locator("b").count() == 0
