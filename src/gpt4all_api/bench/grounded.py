"""The grounded workload: answers that repeat spans of their prompt, where prompt-lookup
(n-gram) speculation can draft tokens ("repeat this list with numbers", "rewrite this code with
one change"). One client, greedy, long answers; our server runs it with prompt lookup on and off
(the request field `prompt_lookup`), the acceptance rate read from `/metrics` deltas."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .load import new_client, stream_chat
from .stats import RequestRecord, percentile

DRAFT_METRIC = "gpt4all_api_draft_tokens_total"
ACCEPTED_METRIC = "gpt4all_api_draft_accepted_tokens_total"

# Text the answers must copy. SmolLM2-135M (the embedded model) copies prose and code "word for
# word" well, while it drops and invents items when asked to repeat a list: the prompts use the
# former so that most of an answer is a span of its prompt.
_STORY = (
    "The harbour town woke slowly. Fishermen checked their nets, the baker opened his shutters "
    "and the smell of warm bread drifted over the cobbled square. Children ran to school past "
    "the old church, whose bell had rung every morning for three hundred years. By noon the "
    "market was full of voices, baskets of apples, crates of fish and bright woollen scarves. "
    "In the afternoon the wind turned, and the boats came home early with their sails full. "
    "The harbour master counted them one by one from his window, wrote their names in a thick "
    "blue book and closed it only when the last boat, a small red one called the Gull, was tied "
    "to the quay. Then he walked down to the water, lit his pipe and listened to the gulls "
    "arguing over the scraps the fishermen threw them. The lamps were lit along the sea wall, "
    "and the town settled down for the night."
)
_GUIDE = (
    "To plant a vegetable garden, first choose a place that gets at least six hours of sun a "
    "day. Clear the ground of weeds and stones, then dig the soil to the depth of a spade and "
    "mix in a thick layer of compost. Rake the surface level and mark straight rows with a "
    "string tied between two sticks. Sow the seeds at the depth written on the packet, cover "
    "them with fine soil and water them gently. Keep the soil moist but not wet until the "
    "seedlings appear. When they have two true leaves, thin them so that each plant has room "
    "to grow. Water in the morning rather than the evening, pull weeds while they are small, "
    "and feed the plants with liquid manure every two weeks once they start to flower. Pick "
    "the vegetables young, when they taste best, and the plants will go on producing more."
)

_CODE = '''def load_orders(path):
    """Read orders from a CSV file and return them as a list of dicts."""
    orders = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            order = {
                "id": int(row["id"]),
                "customer": row["customer"].strip(),
                "amount": float(row["amount"]),
                "currency": row.get("currency", "EUR"),
                "paid": row.get("paid", "no") == "yes",
            }
            orders.append(order)
    return orders


def total_by_customer(orders):
    """Sum the amounts of paid orders for every customer."""
    totals = {}
    for order in orders:
        if not order["paid"]:
            continue
        customer = order["customer"]
        totals[customer] = totals.get(customer, 0.0) + order["amount"]
    return totals


def report(orders, limit=10):
    """Print the customers who paid the most, largest first."""
    totals = total_by_customer(orders)
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    for position, (customer, amount) in enumerate(ranked[:limit], start=1):
        print(f"{position:>3}. {customer:<30} {amount:>12.2f}")
    return ranked[:limit]
'''

GROUNDED_PROMPTS: tuple[str, ...] = (
    "Repeat the following text word for word:\n\n" + _STORY,
    "Repeat the following code word for word, with `orders` renamed to `purchases`:\n\n" + _CODE,
    "Repeat the following text word for word:\n\n" + _GUIDE,
    "Repeat the following code word for word, with the default `limit` of `report` changed to "
    "20:\n\n" + _CODE,
)


def grounded_messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": GROUNDED_PROMPTS[i % len(GROUNDED_PROMPTS)]}]


def root_url(base_url: str) -> str:
    """The server's root: `/metrics` and Ollama's `/api` sit there, beside `/v1`."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1") or root


def unload_model(
    sync: httpx.Client, root: str, model: str, api_key: str | None, wait_s: float = 30.0
) -> None:
    """Unload `model` the way an Ollama client does, and wait until `/api/ps` no longer lists
    it: a server unloads a model that just served a request only once the model is idle."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    unload = {"model": model, "keep_alive": 0}
    sync.post(root + "/api/generate", json=unload, headers=headers).raise_for_status()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        listed = sync.get(root + "/api/ps", headers=headers).raise_for_status().json()["models"]
        if not any(_same_model(m.get("model", ""), model) for m in listed):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{model} was still loaded {wait_s:.0f} s after it was unloaded")


def _same_model(listed: str, model: str) -> bool:
    """Ollama lists `name.gguf` as `name:latest`."""
    return listed.removesuffix(":latest") in (model, model.removesuffix(".gguf"))


def metrics_url(base_url: str) -> str:
    return root_url(base_url) + "/metrics"


def counter_total(text: str, name: str) -> float | None:
    """The sum of a Prometheus counter's samples over all its labels; None when absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest[:1] not in ("{", " "):
            continue  # another metric whose name starts the same
        try:
            total += float(rest.rsplit(None, 1)[-1])
        except ValueError:
            continue
        seen = True
    return total if seen else None


def read_draft_counters(client: httpx.Client, base_url: str) -> tuple[float, float] | None:
    """(drafted, accepted) tokens so far from our server's /metrics; None if it has none."""
    try:
        r = client.get(metrics_url(base_url))
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    drafted, accepted = counter_total(r.text, DRAFT_METRIC), counter_total(r.text, ACCEPTED_METRIC)
    if drafted is None or accepted is None:
        return None
    return drafted, accepted


@dataclass
class GroundedResult:
    """One pass of the grounded prompts against one server in one setting."""

    server: str
    label: str  # e.g. "prompt lookup on"
    records: list[RequestRecord] = field(default_factory=list)
    wall_s: float = 0.0
    drafted: float | None = None  # /metrics deltas over the pass (our server)
    accepted: float | None = None
    per_pass: int = 0  # requests in one pass over the prompts (records are pass after pass)

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.records)

    @property
    def tokens(self) -> int:
        return sum(r.counted_tokens or r.usage_completion or 0 for r in self.records if r.ok)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def pass_tokens_per_s(self) -> tuple[float | None, float | None]:
        """Output tokens/s (over the requests' own times) of the first pass, where every prompt
        is new to the server, and of the later ones, where it has answered each before."""

        def rate(records: list[RequestRecord]) -> float | None:
            ok = [r for r in records if r.ok]
            seconds = sum(r.finished - r.started for r in ok)
            tokens = sum(r.counted_tokens or r.usage_completion or 0 for r in ok)
            return tokens / seconds if seconds > 0 else None

        n = self.per_pass or len(self.records)
        return rate(self.records[:n]), rate(self.records[n:])

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time from first to last chunk: decoding alone,
        without the prompt's prefill, where speculation acts."""
        tokens, seconds = 0, 0.0
        for r in self.records:
            n = r.counted_tokens or r.usage_completion or 0
            if r.ok and n > 1 and len(r.chunk_times) > 1:
                tokens += n - 1
                seconds += r.chunk_times[-1] - r.chunk_times[0]
        return tokens / seconds if seconds > 0 else None

    @property
    def ttft_p50(self) -> float | None:
        return percentile([t for r in self.records if (t := r.ttft) is not None], 50)

    @property
    def acceptance(self) -> float | None:
        if self.drafted is None or self.accepted is None or not self.drafted:
            return None
        return self.accepted / self.drafted

    def texts(self) -> list[str]:
        return [r.text for r in self.records]


async def run_grounded(
    base_url: str,
    model: str | None,
    *,
    server: str,
    label: str,
    passes: int,
    max_tokens: int,
    extra: dict[str, Any] | None = None,
    api_key: str | None = None,
    read_metrics: bool = False,
    fresh_engine: bool = False,
) -> GroundedResult:
    """Every grounded prompt `passes` times, one at a time, greedy, `max_tokens` each.

    First each prompt once for one token, not counted: every server and setting then finds the
    prompts in its prefix cache, whichever ran first (otherwise the first one measured pays
    every prefill and the next ones none). `fresh_engine` (our server): unload the model
    before, so that no setting drafts from answers an earlier one gave (the engine's shared
    n-gram table); the model loads again with the first request."""
    result = GroundedResult(server=server, label=label, per_pass=len(GROUNDED_PROMPTS))
    base_url = base_url.rstrip("/")
    with httpx.Client(timeout=30, trust_env=False) as sync:
        if fresh_engine and model is not None:
            unload_model(sync, root_url(base_url), model, api_key)
        async with new_client(1, api_key) as client:
            for i in range(len(GROUNDED_PROMPTS)):
                await stream_chat(client, base_url, model, grounded_messages(i), 1, extra)
        before = read_draft_counters(sync, base_url) if read_metrics else None
        start = time.perf_counter()
        async with new_client(1, api_key) as client:
            for i in range(passes * len(GROUNDED_PROMPTS)):
                rec = await stream_chat(
                    client, base_url, model, grounded_messages(i), max_tokens, extra
                )
                result.records.append(rec)
        result.wall_s = time.perf_counter() - start
        after = read_draft_counters(sync, base_url) if read_metrics else None
    if before is not None and after is not None:
        result.drafted = after[0] - before[0]
        result.accepted = after[1] - before[1]
    return result
