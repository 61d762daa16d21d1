"""Prometheus metrics (`GET /metrics`), kept in a registry of the app's own.

Request metrics are counted by the request middleware as requests end. Engine metrics (queue,
slots, KV cache, token totals) are read from each loaded model's `Engine.stats()` when scraped,
so they cost nothing between scrapes. An engine's token totals start again from zero when its
model is reloaded, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .state import ServerState

PREFIX = "gpt4all_api"


class Traced(Protocol):
    """What the middleware knows about a finished request (see `middleware.RequestTrace`)."""

    started: float
    model: str | None
    first_token_at: float | None
    finished_at: float | None
    completion_tokens: int


class Metrics:
    """The app's metrics and the registry that holds them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, state: ServerState):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["route"],
            buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_requests_in_progress", "HTTP requests being served.", registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first generated token.",
            ["model"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.tokens_per_second = Histogram(
            f"{PREFIX}_generation_tokens_per_second",
            "Tokens per second a request received after its first token.",
            ["model"],
            buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 400),
            registry=r,
        )
        r.register(EngineCollector(state))

    def observe_request(
        self, method: str, route: str, status: int, duration: float, trace: Traced
    ) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(route).observe(duration)
        if trace.first_token_at is None:
            return
        model = trace.model or ""
        self.ttft.labels(model).observe(trace.first_token_at - trace.started)
        if trace.finished_at is not None and trace.completion_tokens > 1:
            elapsed = trace.finished_at - trace.first_token_at
            if elapsed > 0:
                rate = (trace.completion_tokens - 1) / elapsed
                self.tokens_per_second.labels(model).observe(rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Reads every loaded model's engine statistics at scrape time."""

    def __init__(self, state: ServerState):
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])

        loaded_models = GaugeMetricFamily(f"{PREFIX}_loaded_models", "Models loaded now.")
        loaded = gauge("model_loaded", "1 for each loaded model.")
        queue = gauge("queue_depth", "Requests waiting for a sequence or room in the KV pool.")
        running = gauge("running_sequences", "Sequences being generated.")
        slots = gauge("slots", "Most sequences decoded together (parallel).")
        kv_used = gauge("kv_cache_tokens", "Tokens held in the shared KV pool, idle ones' too.")
        kv_cap = gauge("kv_cache_capacity_tokens", "Tokens the shared KV pool holds at most.")
        kv_ratio = gauge("kv_cache_usage_ratio", "KV cache tokens in use / capacity.")
        threads = gauge("decode_threads", "CPU threads decoding now (fewer while cores are taken).")
        prompt = counter("prompt_tokens", "Prompt tokens of admitted requests.")
        cached = counter("cached_prompt_tokens", "Prompt tokens reused from the KV cache.")
        generated = counter("generated_tokens", "Tokens generated.")
        reasoning = counter("reasoning_tokens", "Tokens generated while thinking (of those).")
        steps = counter("engine_steps", "llama_decode steps run by the engine.")
        drafted = counter("draft_tokens", "Tokens drafted by prompt lookup and verified.")
        accepted = counter("draft_accepted_tokens", "Drafted tokens the model agreed with.")
        preempted = counter(
            "preempted_sequences", "Running sequences sent back to wait when the KV pool was full."
        )
        copies = counter(
            "prefix_copies", "Prompts started from a copy of another sequence's cached prefix."
        )
        restores = counter("prompt_cache_restores", "Prompts started from a KV state saved in RAM.")
        cache_bytes = gauge("prompt_cache_bytes", "RAM the saved prompt KV states take.")
        gpu_layers = gauge("gpu_layers", "Layers offloaded to GPUs (the output layer counts).")
        layers = gauge("model_layers", "Layers of the model (repeating layers + output layer).")
        device_memory = GaugeMetricFamily(
            f"{PREFIX}_device_memory_bytes",
            "Device (GPU) memory llama.cpp allocated for the model, per device; cpu: 0.",
            labels=["model", "device"],
        )
        models = self.state.registry.loaded
        loaded_models.add_metric([], len(models))
        for name, entry in models.items():
            s = entry.engine.stats()
            capacity = s.kv_capacity
            loaded.add_metric([name], 1)
            queue.add_metric([name], s.waiting)
            running.add_metric([name], s.busy_slots)
            slots.add_metric([name], s.slots)
            kv_used.add_metric([name], s.kv_tokens)
            kv_cap.add_metric([name], capacity)
            kv_ratio.add_metric([name], s.kv_tokens / capacity if capacity else 0.0)
            threads.add_metric([name], s.threads)
            prompt.add_metric([name], s.prompt_tokens)
            cached.add_metric([name], s.cached_prompt_tokens)
            generated.add_metric([name], s.generated_tokens)
            reasoning.add_metric([name], s.reasoning_tokens)
            steps.add_metric([name], s.steps)
            drafted.add_metric([name], s.draft_tokens)
            accepted.add_metric([name], s.draft_accepted)
            preempted.add_metric([name], s.preempted)
            copies.add_metric([name], s.prefix_copies)
            restores.add_metric([name], s.prompt_cache_restores)
            cache_bytes.add_metric([name], s.prompt_cache_bytes)
            report = entry.offload
            gpu_layers.add_metric([name], report.plan.gpu_layers)
            layers.add_metric([name], report.plan.n_layers)
            for device, size in (report.device_memory or {report.plan.device: 0}).items():
                device_memory.add_metric([name, device], size)
        yield from (loaded_models, loaded, queue, running, slots, kv_used, kv_cap, kv_ratio)
        yield threads
        yield from (
            prompt,
            cached,
            generated,
            reasoning,
            steps,
            drafted,
            accepted,
            preempted,
            copies,
            restores,
            cache_bytes,
        )
        yield from (gpu_layers, layers, device_memory)
