"""The KV cache's precisions, named as llama.cpp's `-ctk` / `-ctv` name them: one table for
the settings, the engine, the GPU fit and the bench."""

from __future__ import annotations

from typing import Literal, get_args

KVType = Literal["f16", "q8_0"]
KV_TYPE_NAMES: tuple[str, ...] = get_args(KVType)

#: The KV cache's (keys, values) precision by default. q8_0 keys halve their memory; f16 values
#: prefill long prompts 1.3-1.4x faster than q8_0 ones. With the two types unlike (or both
#: quantized), llama.cpp's CPU flash attention sums one query row at a time, so greedy answers
#: do not depend on how prompts were batched (docs/performance.md, "The KV cache type").
DEFAULT_KV_TYPES: tuple[KVType, KVType] = ("q8_0", "f16")


FlashAttention = Literal["auto", "on", "off"]


def needs_flash_attention(kv_types: tuple[str, str]) -> bool:
    """llama.cpp runs a quantized V cache only with flash attention; `auto` also runs a
    quantized K cache with f16 values through it (the row-at-a-time sums above)."""
    return "q8_0" in kv_types


def flash_attention_on(mode: str, kv_types: tuple[str, str]) -> bool | None:
    """Whether attention runs through llama.cpp's flash attention kernel; None: llama.cpp
    decides (its own auto: on where the device has the kernel, the CPU included).

    `off` suits long contexts on the CPU: there the kernel walks the KV cache one query row
    and one cell at a time, and the matrix products it replaces prefill a 6,000-token prompt
    4.6x faster and generate after it 2.9x faster (docs/performance.md, "Flash attention on
    the CPU"). Their sums, though, depend on how many tokens were in the batch, so greedy
    answers may differ with the batching, as with f16 keys."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return True if needs_flash_attention(kv_types) else None
