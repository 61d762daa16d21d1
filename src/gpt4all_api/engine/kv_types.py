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


def needs_flash_attention(kv_types: tuple[str, str]) -> bool:
    """llama.cpp runs a quantized V cache only with flash attention; a quantized K cache with
    f16 values takes the same kernel (the row-at-a-time sums above)."""
    return "q8_0" in kv_types
