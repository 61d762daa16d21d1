"""A loaded GGUF model: weights, vocabulary, tokenizer and metadata.

The model (weights + vocab) is read-only once loaded, so tokenizing from any thread is safe; only
the engine thread touches a llama.cpp *context*.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as lc

from ..errors import InvalidRequest
from . import devices, llama_log
from .kv_types import KV_TYPE_NAMES
from .offload import OffloadPlan

SPLIT_MODES = {
    "none": lc.LLAMA_SPLIT_MODE_NONE,
    "layer": lc.LLAMA_SPLIT_MODE_LAYER,
    "row": lc.LLAMA_SPLIT_MODE_ROW,
}

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def init_backend() -> None:
    """Initialise llama.cpp once per process and keep its chatter out of stderr."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_backend_init()
            # llama.cpp's log goes to `gpt4all_api.llama_cpp` (DEBUG), not llama-cpp-python's
            # printer to stderr; loads read their buffer sizes from it.
            llama_log.install()
            _backend_ready = True


_KV_GGML_TYPES = {name: getattr(lc, f"GGML_TYPE_{name.upper()}") for name in KV_TYPE_NAMES}


def kv_cache_types(
    params: lc.llama_context_params, kv_types: tuple[str, str], flash: bool | None
) -> None:
    """Set a context's KV cache types ("f16" or "q8_0") and whether attention runs through
    flash attention (`kv_types.flash_attention_on`; None: llama.cpp's auto). On the CPU, flash
    attention over a K and a V of unlike types, or of quantized ones, sums one query row at a
    time, so a token's logits do not depend on what else was in its batch. Over f16 K and V
    with flash attention on, a batch of queries takes a tiled kernel whose sums do; so do the
    matrix products that replace flash attention when it is off (docs/performance.md)."""
    params.type_k = _KV_GGML_TYPES[kv_types[0]]
    params.type_v = _KV_GGML_TYPES[kv_types[1]]
    if flash is not None:
        params.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )


class ModelLoadError(Exception):
    """The file is not a loadable GGUF model."""


@dataclass
class Model:
    """Weights and vocabulary of one GGUF file, shared by the engine and request handlers."""

    path: Path
    ptr: lc.llama_model_p
    vocab: lc.llama_vocab_p
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    add_bos: bool
    bos_id: int
    eos_id: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    has_encoder: bool
    metadata: dict[str, str] = field(default_factory=dict)
    _closed: bool = False

    @classmethod
    def load(
        cls, path: Path, plan: OffloadPlan | None = None, *, repack: bool | None = None
    ) -> Model:
        """Load the weights; `plan` says how many layers go to which GPU (none: all on CPU),
        `repack` whether weights go to llama.cpp's extra CPU buffer types (None: as
        `devices.repack_by_default` says)."""
        init_backend()
        params = lc.llama_model_default_params()
        if repack is None:
            repack, why = devices.repack_by_default()
            log.log(logging.DEBUG if repack else logging.INFO, "%s: %s", path.name, why)
        params.use_extra_bufts = repack
        params.n_gpu_layers = plan.gpu_layers if plan is not None else 0
        keep: list[object] = []  # arrays llama.cpp reads during the load
        if plan is not None and plan.gpu_layers:
            params.split_mode = SPLIT_MODES[plan.split_mode]
            params.main_gpu = plan.main_gpu
            if plan.tensor_split:
                split = (ctypes.c_float * lc.LLAMA_MAX_DEVICES)(*plan.tensor_split)
                keep.append(split)
                params.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
            if plan.backend_filter is not None:
                handles = devices.device_handles(plan.backend_filter)
                array = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)
                keep.append(array)
                params.devices = ctypes.cast(array, ctypes.c_void_p)
        ptr = lc.llama_model_load_from_file(str(path).encode(), params)
        del keep
        if not ptr:
            raise ModelLoadError(f"llama.cpp could not load {path}")
        vocab = lc.llama_model_get_vocab(ptr)
        bos = lc.llama_vocab_bos(vocab)
        eos = lc.llama_vocab_eos(vocab)
        model = cls(
            path=path,
            ptr=ptr,
            vocab=vocab,
            n_vocab=lc.llama_vocab_n_tokens(vocab),
            n_ctx_train=lc.llama_model_n_ctx_train(ptr),
            n_embd=lc.llama_model_n_embd(ptr),
            add_bos=bool(lc.llama_vocab_get_add_bos(vocab)),
            bos_id=bos,
            eos_id=eos,
            chat_template=None,
            bos_text="",
            eos_text="",
            has_encoder=bool(lc.llama_model_has_encoder(ptr)),
        )
        model.metadata = model._read_metadata()
        model.chat_template = model.metadata.get("tokenizer.chat_template")
        model.bos_text = model.token_text(bos) if bos >= 0 else ""
        model.eos_text = model.token_text(eos) if eos >= 0 else ""
        log.info(
            "loaded %s: %d tokens of vocabulary, trained context %d",
            path.name,
            model.n_vocab,
            model.n_ctx_train,
        )
        return model

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lc.llama_model_free(self.ptr)

    # -- metadata ---------------------------------------------------------------------------

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        count = lc.llama_model_meta_count(self.ptr)
        key_buf = ctypes.create_string_buffer(256)
        for i in range(count):
            n = lc.llama_model_meta_key_by_index(self.ptr, i, key_buf, len(key_buf))
            if n < 0:
                continue
            key = key_buf.value.decode("utf-8", "replace")
            size = lc.llama_model_meta_val_str_by_index(self.ptr, i, None, 0)
            if size < 0:
                continue
            val_buf = ctypes.create_string_buffer(size + 1)
            lc.llama_model_meta_val_str_by_index(self.ptr, i, val_buf, size + 1)
            out[key] = val_buf.value.decode("utf-8", "replace")
        return out

    @property
    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self.ptr, buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text to token ids. With `add_special` the model's BOS is added when it wants one."""
        data = text.encode("utf-8", "surrogatepass")
        n_max = len(data) + 8
        buf = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (lc.llama_token * n_max)()
            n = lc.llama_tokenize(
                self.vocab, data, len(data), buf, n_max, add_special, parse_special
            )
        tokens = list(buf[:n])
        # A template that already wrote the BOS text must not get a second BOS.
        if (
            add_special
            and self.add_bos
            and len(tokens) >= 2
            and tokens[0] == self.bos_id
            and tokens[1] == self.bos_id
        ):
            tokens = tokens[1:]
        return tokens

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (special tokens render as empty unless asked)."""
        buf = ctypes.create_string_buffer(64)
        n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.token_bytes(token, special=True).decode("utf-8", "replace")

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return b"".join(self.token_bytes(t, special=special) for t in tokens).decode(
            "utf-8", "replace"
        )

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) token ids when the model does fill-in-the-middle."""
        ids = (
            lc.llama_vocab_fim_pre(self.vocab),
            lc.llama_vocab_fim_suf(self.vocab),
            lc.llama_vocab_fim_mid(self.vocab),
        )
        return None if min(ids) < 0 else ids

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    def check_tokens(self, tokens: list[int], param: str) -> None:
        for t in tokens:
            if not 0 <= t < self.n_vocab:
                raise InvalidRequest(
                    f"token id {t} is outside the vocabulary (0..{self.n_vocab - 1})", param=param
                )
