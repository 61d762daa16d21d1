// The gpt4all-api playground: a chat page, LocalDocs collections and a model catalog over the
// server's own /v1 API.
// Model output is only ever set with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "gpt4all-api.api-key";
const MODEL_STORAGE = "gpt4all-api.model";

const $ = (id) => document.getElementById(id);

const chat = {
  history: [], // finished turns: {role, content}
  controller: null, // AbortController of the reply being streamed
  session: 0, // bumped by "New chat" so a reply stopped by it is not kept
};

// ---------------------------------------------------------------- HTTP helpers

function authHeaders(json) {
  const headers = {};
  if (json) headers["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

// A readable message for a failed response (OpenAI error body when there is one).
async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = body && body.error && body.error.message ? body.error.message : JSON.stringify(body);
  } catch {
    detail = response.statusText || "";
  }
  if (response.status === 401) {
    const hasKey = $("api-key").value.trim() !== "";
    return hasKey
      ? `The server refused the API key (401). Check the key in the API key box. ${detail}`
      : `This server needs an API key (401). Enter it in the API key box. ${detail}`;
  }
  return `Error ${response.status}: ${detail}`;
}

// Yields the `data:` payload of each server-sent event of a streamed response.
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text || "";
  notice.hidden = !text;
}

function formatBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

// ---------------------------------------------------------------- server status and models

async function loadStatus() {
  const status = $("server-status");
  try {
    const r = await fetch("/health");
    const body = await r.json();
    status.textContent = r.ok ? "Ready" : `Default model ${body.status || "loading"}…`;
    status.dataset.state = r.ok ? "ok" : "busy";
    if (!r.ok) setTimeout(loadStatus, 2000);
  } catch {
    status.textContent = "Server unreachable";
    status.dataset.state = "error";
  }
}

async function loadModels() {
  const select = $("model");
  let response;
  try {
    response = await fetch("/v1/models", { headers: authHeaders(false) });
  } catch (err) {
    showNotice(`Could not reach the server: ${err.message}`);
    return;
  }
  if (!response.ok) {
    showNotice(await errorMessage(response));
    return;
  }
  const { data } = await response.json();
  const wanted = select.value || localStorage.getItem(MODEL_STORAGE);
  select.replaceChildren();
  let fallback = null;
  for (const m of data) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id + (m.default ? " (default)" : "");
    select.append(option);
    if (m.default) fallback = m.id;
  }
  const ids = data.map((m) => m.id);
  select.value = ids.includes(wanted) ? wanted : fallback || ids[0] || "";
  showNotice("");
}

// ---------------------------------------------------------------- chat

function addMessage(role, text) {
  $("chat-empty").hidden = true;
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const who = document.createElement("div");
  who.className = "role";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  const body = document.createTextNode(text); // streamed pieces are appended to this node
  content.append(body);
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(who, content, meta);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, content, body, meta };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("model").disabled = busy;
}

function describeReply(usage, finish, started, firstAt, ended) {
  const parts = [];
  if (usage) {
    parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    const genSeconds = (ended - (firstAt ?? started)) / 1000;
    const total = (ended - started) / 1000;
    const rate =
      usage.completion_tokens > 1 && genSeconds > 0
        ? (usage.completion_tokens - 1) / genSeconds
        : usage.completion_tokens / Math.max(total, 0.001);
    parts.push(`${rate.toFixed(1)} tokens/s`);
  }
  if (firstAt !== null) parts.push(`first token ${((firstAt - started) / 1000).toFixed(2)} s`);
  if (finish) parts.push(finish === "length" ? "stopped at max tokens" : `finish: ${finish}`);
  return parts.join(" · ");
}

function numberOr(id, fallback) {
  const v = Number.parseFloat($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

async function send(text) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...chat.history, { role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.item.classList.add("streaming");
  reply.item.setAttribute("aria-busy", "true");
  showNotice("");
  setBusy(true);

  const controller = new AbortController();
  chat.controller = controller;
  const session = chat.session;
  const remember = (content) => {
    if (session === chat.session) {
      chat.history.push({ role: "user", content: text }, { role: "assistant", content });
    }
  };
  const started = performance.now();
  let firstAt = null;
  let usage = null;
  let finish = null;
  let answer = "";
  let pieces = 0;
  const request = {
    model: $("model").value || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberOr("temperature", 0.7),
    top_p: numberOr("top-p", 1),
    max_tokens: Math.max(1, Math.round(numberOr("max-tokens", 512))),
  };
  const collection = $("localdocs").value;
  if (collection) request.localdocs = [collection];
  let references;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: authHeaders(true),
      body: JSON.stringify(request),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "generation failed");
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          if (firstAt === null) firstAt = performance.now();
          const list = $("messages");
          const following = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
          answer += piece;
          pieces += 1;
          reply.body.appendData(piece);
          if (following) list.scrollTop = list.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
        if (choice.references !== undefined) references = choice.references;
      }
    }
    remember(answer);
    if (collection) showSources(reply, references);
    reply.meta.textContent = describeReply(usage, finish, started, firstAt, performance.now());
    reply.item.dataset.state = "done";
  } catch (err) {
    if (err.name === "AbortError") {
      // Keep what arrived so the conversation can go on from it.
      remember(answer);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      reply.meta.textContent = `Stopped after ${seconds} s · about ${pieces} tokens received`;
      reply.item.dataset.state = "stopped";
    } else {
      reply.item.classList.add("error");
      reply.item.dataset.state = "error";
      reply.meta.textContent = err.message;
      showNotice(err.message);
    }
  } finally {
    reply.item.classList.remove("streaming");
    reply.item.removeAttribute("aria-busy");
    if (chat.controller === controller) chat.controller = null;
    setBusy(false);
  }
}

// The passages a reply was given (GPT4All's `references`), under it, as plain text.
function showSources(reply, references) {
  const box = document.createElement("details");
  box.className = "sources";
  const summary = document.createElement("summary");
  const found = references || [];
  summary.textContent = found.length ? `Sources (${found.length})` : "No sources found";
  box.append(summary);
  const list = document.createElement("ol");
  for (const ref of found) {
    const item = document.createElement("li");
    const where = document.createElement("strong");
    where.textContent = ref.page > 0 ? `${ref.file}, page ${ref.page}` : ref.file;
    const text = document.createElement("p");
    text.textContent = ref.text;
    item.append(where, text);
    list.append(item);
  }
  box.append(list);
  reply.item.append(box);
}

function stop() {
  if (chat.controller) chat.controller.abort();
}

function newChat() {
  stop();
  chat.session += 1;
  chat.history = [];
  $("messages").replaceChildren();
  $("chat-empty").hidden = false;
  showNotice("");
  $("prompt").focus();
}

// ---------------------------------------------------------------- catalog

function catalogFacts(m) {
  const facts = [m.filename];
  if (m.filesize) facts.push(formatBytes(m.filesize));
  if (m.ramrequired) facts.push(`${m.ramrequired} GB RAM`);
  if (m.parameters) facts.push(`${m.parameters} parameters`);
  if (m.quant) facts.push(m.quant);
  if (m.type) facts.push(m.type);
  return facts.join(" · ");
}

// Catalog descriptions may hold HTML markup: keep only its text, never insert it as HTML.
// (DOMParser documents are inert: nothing in them runs or loads.)
function plainText(html) {
  if (!html) return "";
  const doc = new DOMParser().parseFromString(html, "text/html");
  for (const el of doc.querySelectorAll("script, style, template")) el.remove();
  for (const li of doc.querySelectorAll("li")) {
    li.prepend("• ");
    li.append(" ");
  }
  for (const br of doc.querySelectorAll("br, p, div")) br.append(" ");
  return doc.body.textContent.replace(/\s+/g, " ").trim();
}

function renderCatalogItem(m) {
  const item = document.createElement("li");
  item.className = "catalog-item";
  const title = document.createElement("h3");
  title.textContent = m.name || m.filename;
  const facts = document.createElement("p");
  facts.className = "facts";
  facts.textContent = catalogFacts(m);
  const description = document.createElement("p");
  description.className = "description";
  description.textContent = plainText(m.description);
  const row = document.createElement("div");
  row.className = "download-row";
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", `Download ${m.name || m.filename}`);
  const progress = document.createElement("progress");
  progress.max = 1;
  progress.value = 0;
  progress.hidden = true;
  progress.setAttribute("aria-label", `Download progress of ${m.name || m.filename}`);
  const note = document.createElement("span");
  note.className = "progress-text";
  note.setAttribute("role", "status");
  if (m.installed) {
    button.textContent = "Installed";
    button.disabled = true;
  } else if (m.downloading) {
    button.textContent = "Downloading…";
    button.disabled = true;
  } else {
    button.textContent = "Download";
  }
  button.addEventListener("click", () => pull(m, { button, progress, note }));
  row.append(button, progress, note);
  item.append(title, facts, description, row);
  return item;
}

async function loadCatalog() {
  const status = $("catalog-status");
  const list = $("catalog-list");
  status.textContent = "Loading the catalog…";
  let response;
  try {
    response = await fetch("/v1/catalog", { headers: authHeaders(false) });
  } catch (err) {
    status.textContent = `Could not reach the server: ${err.message}`;
    return;
  }
  if (response.status === 404) {
    list.replaceChildren();
    status.textContent = "Catalog not available on this server.";
    return;
  }
  if (!response.ok) {
    status.textContent = await errorMessage(response);
    return;
  }
  const body = await response.json();
  list.replaceChildren(...body.data.map(renderCatalogItem));
  const when = body.fetched_at ? new Date(body.fetched_at * 1000).toLocaleString() : null;
  const parts = [`${body.data.length} models`];
  if (body.offline) parts.push("offline: showing the saved copy of the catalog");
  if (when) parts.push(`updated ${when}`);
  status.textContent = parts.join(" · ");
}

async function pull(m, ui) {
  ui.button.disabled = true;
  ui.button.textContent = "Downloading…";
  ui.progress.hidden = false;
  ui.progress.removeAttribute("value"); // indeterminate until the size is known
  ui.note.textContent = "Starting…";
  let ok = false;
  try {
    const response = await fetch("/v1/models/pull", {
      method: "POST",
      headers: authHeaders(true),
      body: JSON.stringify({ model: m.filename }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const ev = JSON.parse(data);
      if (ev.status === "error") throw new Error(ev.error ? ev.error.message : "download failed");
      if (ev.status === "downloading" || ev.status === "starting") {
        if (ev.total) {
          ui.progress.max = ev.total;
          ui.progress.value = ev.completed;
          const pct = ((100 * ev.completed) / ev.total).toFixed(0);
          const speed = ev.bytes_per_second ? ` · ${formatBytes(ev.bytes_per_second)}/s` : "";
          ui.note.textContent = `${pct}% · ${formatBytes(ev.completed)} of ${formatBytes(ev.total)}${speed}`;
        } else {
          ui.note.textContent = `${formatBytes(ev.completed)}`;
        }
      } else if (ev.status === "verifying") {
        ui.progress.removeAttribute("value");
        ui.note.textContent = "Verifying…";
      } else if (ev.status === "success") {
        ok = true;
      }
    }
    if (!ok) throw new Error("the download ended before it finished");
    ui.progress.max = 1;
    ui.progress.value = 1;
    ui.button.textContent = "Installed";
    ui.note.textContent = "Installed";
    loadModels();
  } catch (err) {
    ui.button.disabled = false;
    ui.button.textContent = "Retry";
    ui.progress.hidden = true;
    ui.note.textContent = err.message;
  }
}

// ---------------------------------------------------------------- documents

// The collections (vector stores): listed on the Documents tab and offered in the chat settings.
async function loadCollections() {
  let response;
  try {
    response = await fetch("/v1/vector_stores?limit=100", { headers: authHeaders(false) });
  } catch (err) {
    $("docs-status").textContent = `Cannot reach the server: ${err.message}`;
    return null;
  }
  if (!response.ok) {
    $("docs-status").textContent = await errorMessage(response);
    return null;
  }
  const stores = (await response.json()).data;
  const list = $("docs-list");
  list.replaceChildren();
  for (const s of stores) {
    const item = document.createElement("li");
    item.className = "catalog-item";
    const title = document.createElement("h3");
    title.textContent = s.name || s.id;
    const facts = document.createElement("p");
    facts.className = "facts";
    const c = s.file_counts;
    const parts = [`${c.completed} files indexed`];
    if (c.in_progress) parts.push(`${c.in_progress} indexing`);
    if (c.failed) parts.push(`${c.failed} failed`);
    parts.push(formatBytes(s.usage_bytes), `embedded with ${s.embedding_model}`);
    facts.textContent = parts.join(" · ");
    item.append(title, facts);
    list.append(item);
  }
  const select = $("localdocs");
  const current = select.value;
  const names = [...new Set(stores.map((s) => s.name).filter(Boolean))];
  select.replaceChildren(new Option("None", ""), ...names.map((n) => new Option(n, n)));
  select.value = names.includes(current) ? current : "";
  return stores;
}

async function uploadDocs() {
  const name = $("docs-name").value.trim();
  const files = [...$("docs-files").files];
  const status = $("docs-status");
  if (!name || !files.length) return;
  $("docs-upload").disabled = true;
  try {
    const stores = (await loadCollections()) || [];
    let store = stores.find((s) => s.name === name);
    if (!store) {
      const r = await fetch("/v1/vector_stores", {
        method: "POST",
        headers: authHeaders(true),
        body: JSON.stringify({ name }),
      });
      if (!r.ok) throw new Error(await errorMessage(r));
      store = await r.json();
    }
    for (const [i, file] of files.entries()) {
      status.textContent = `Uploading ${file.name} (${i + 1} of ${files.length})…`;
      const form = new FormData();
      form.append("purpose", "assistants");
      form.append("file", file);
      let r = await fetch("/v1/files", { method: "POST", headers: authHeaders(false), body: form });
      if (!r.ok) throw new Error(await errorMessage(r));
      const uploaded = await r.json();
      r = await fetch(`/v1/vector_stores/${store.id}/files`, {
        method: "POST",
        headers: authHeaders(true),
        body: JSON.stringify({ file_id: uploaded.id, attributes: { path: file.name } }),
      });
      if (!r.ok) throw new Error(await errorMessage(r));
    }
    for (;;) {
      const r = await fetch(`/v1/vector_stores/${store.id}`, { headers: authHeaders(false) });
      if (!r.ok) throw new Error(await errorMessage(r));
      const c = (await r.json()).file_counts;
      if (!c.in_progress) {
        status.textContent =
          `${name}: ${c.completed} files indexed` + (c.failed ? `, ${c.failed} failed` : "");
        break;
      }
      status.textContent = `Indexing ${name}: ${c.total - c.in_progress} of ${c.total} files…`;
      await new Promise((done) => setTimeout(done, 300));
    }
    $("docs-files").value = "";
    await loadCollections();
  } catch (err) {
    status.textContent = err.message;
  } finally {
    $("docs-upload").disabled = false;
  }
}

// ---------------------------------------------------------------- tabs and wiring

const TABS = ["chat", "docs", "catalog"];

function selectTab(name) {
  for (const tab of TABS) {
    const active = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(active));
    button.tabIndex = active ? 0 : -1;
    $(`view-${tab}`).hidden = !active;
  }
  if (name === "catalog") loadCatalog();
  if (name === "docs") loadCollections();
}

function bindRange(id) {
  const input = $(id);
  const output = $(`${id}-value`);
  const update = () => {
    output.textContent = input.value;
  };
  input.addEventListener("input", update);
  update();
}

function init() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    const value = key.value.trim();
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
    loadModels();
  });
  $("model").addEventListener("change", () => localStorage.setItem(MODEL_STORAGE, $("model").value));
  bindRange("temperature");
  bindRange("top-p");

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt");
    const text = prompt.value.trim();
    if (!text || chat.controller) return;
    prompt.value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-docs").addEventListener("click", () => selectTab("docs"));
  $("tab-catalog").addEventListener("click", () => selectTab("catalog"));
  $("catalog-refresh").addEventListener("click", loadCatalog);
  $("docs-refresh").addEventListener("click", loadCollections);
  $("docs-form").addEventListener("submit", (event) => {
    event.preventDefault();
    uploadDocs();
  });
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const now = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
      const step = event.key === "ArrowRight" ? 1 : TABS.length - 1;
      const next = TABS[(now + step) % TABS.length];
      selectTab(next);
      $(`tab-${next}`).focus();
    }
  });

  loadStatus();
  loadModels();
  loadCollections();
  $("prompt").focus();
}

document.addEventListener("DOMContentLoaded", init);
