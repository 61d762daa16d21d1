"""What the engine keeps per slot and per generating sequence, and its settings and counters."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from .kv_types import DEFAULT_KV_TYPES, FlashAttention, flash_attention_on
from .lookup import PromptLookup
from .reasoning import ReasoningSplitter
from .request import GenerationRequest, RequestHandle, TokenLogprob
from .sampling import SamplerChain
from .text import StopMatcher, TokenTextDecoder


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many first tokens `a` and `b` share. Slices compare in C and the first difference is
    found by halving, so a 15,000-token system prompt shared by every conversation costs tens
    of microseconds per sequence or saved prompt compared, not milliseconds."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo]; the first difference is before hi
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while a[lo] == b[lo]:
        lo += 1
    return lo


@dataclass(frozen=True)
class EngineConfig:
    context_size: int = 2048  # most tokens one sequence holds
    parallel: int = 16  # sequences decoded together at most
    batch_size: int = 512
    threads: int = 2
    share_cores: bool = True  # fewer threads while other processes use cores (cores.py)
    lazy_kv: bool = True  # the KV cache's pages are given back until written (kv_pages.py)
    max_queue: int = 0  # 0: unbounded
    #: The KV cache's (keys, values) types, "f16" or "q8_0" (half the memory; flash attention).
    kv_types: tuple[str, str] = DEFAULT_KV_TYPES
    flash_attention: FlashAttention = "auto"  # auto: on with a q8_0 cache (kv_types.py)
    #: One KV pool shared by all sequences (llama.cpp's unified KV cache) instead of a fixed
    #: `context_size` per sequence: more sequences in the same memory, but a sequence's cells
    #: then sit wherever the pool had room, and the order attention sums them in (so the last
    #: bits of the logits) depends on what else ran: greedy output is no longer the same
    #: whatever the batching.
    kv_unified: bool = False
    kv_size: int = 0  # with kv_unified: the pool's cells; 0: see `pool_cells`
    prompt_lookup: bool = True  # draft tokens from the sequence's own context
    #: also draft from one table of every sequence's 16-token n-grams (lookup.SharedNgrams)
    prompt_lookup_shared: bool = True
    draft_max: int = 16  # most drafted tokens of one sequence in one step
    #: RAM for the KV of prompts whose sequence went to another prompt (prompt_cache.py); 0: off
    prompt_cache_mb: int = 1024

    @property
    def flash(self) -> bool | None:
        """Flash attention on or off; None: llama.cpp's own auto (`flash_attention_on`)."""
        return flash_attention_on(self.flash_attention, self.kv_types)

    @property
    def pool_cells(self) -> int:
        """KV cells in all: `context_size` per sequence; with `kv_unified`, `kv_size`, else
        room for eight sequences of `context_size` (or `parallel`, when fewer)."""
        if not self.kv_unified:
            return self.context_size * self.parallel
        return self.kv_size or self.context_size * min(self.parallel, 8)


@dataclass(eq=False)
class Job:
    """One sequence being generated: one choice of one request."""

    handle: RequestHandle
    index: int
    prompt: list[int]
    chain: SamplerChain
    stops: StopMatcher
    decoder: TokenTextDecoder = field(default_factory=TokenTextDecoder)
    slot: Slot | None = None
    leader: Job | None = None  # for choices 2..n: the job whose prompt KV they copy
    followers: list[Job] = field(default_factory=list)
    pending: int | None = None  # sampled, not yet decoded
    n_generated: int = 0
    cached_tokens: int = 0
    batch_index: int = -1
    prompt_scores: list[TokenLogprob | None] = field(default_factory=list)
    history: collections.deque[int] | None = None  # penalty window, kept for logprobs
    done: bool = False
    think: ReasoningSplitter | None = None  # for a model that reasons
    answer_chain: SamplerChain | None = None  # the chain with the answer's grammar, once it applies
    #: Tokens the server writes (not sampled) before the model goes on.
    forced: collections.deque[int] = field(default_factory=collections.deque)
    call_chain: SamplerChain | None = None  # the chain with the call grammar, once a call opens
    answer_seen: str = ""  # the answer's tail, to find a call's open tag across tokens
    #: The tokens to bring into the KV before generating: the prompt, or after a preemption the
    #: prompt and the answer so far (the sampled `pending` token then goes in next).
    fill: list[int] = field(default_factory=list)
    lookup: PromptLookup | None = None  # prompt-lookup drafting, when on
    drafts: list[int] = field(default_factory=list)  # drafted tokens in this step's batch
    order: int = 0  # admission order: the newest job is preempted first

    def __post_init__(self) -> None:
        if not self.fill:
            self.fill = self.prompt

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request

    def free_chains(self) -> None:
        self.chain.free()
        if self.answer_chain is not None:
            self.answer_chain.free()
            self.answer_chain = None
        if self.call_chain is not None:
            self.call_chain.free()
            self.call_chain = None


@dataclass(eq=False)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    job: Job | None = None
    last_used: float = 0.0


@dataclass
class EngineStats:
    slots: int
    busy_slots: int
    waiting: int
    context_per_slot: int
    kv_tokens: int
    kv_capacity: int
    steps: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int = 0  # of `generated_tokens`, those spent thinking
    draft_tokens: int = 0  # tokens drafted by prompt lookup and verified
    draft_accepted: int = 0  # of those, the ones the model agreed with
    preempted: int = 0  # sequences sent back to wait when the KV pool ran short
    prefix_copies: int = 0  # prompts started from a copy of another sequence's prefix
    prompt_cache_restores: int = 0  # prompts started from a state saved in RAM
    prompt_cache_bytes: int = 0  # RAM the saved states take
    threads: int = 0  # decode threads now
