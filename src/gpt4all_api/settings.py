"""Server settings: one object, from CLI flags > environment > `.env` > defaults.

This is the only module that reads the environment. Every setting has an environment variable
`GPT4ALL_API_<NAME>`; a few also answer to the names the original gpt4all API used
(`MODEL_PATH`, `DEFAULT_MODEL`, `API_KEYS`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .engine.kv_types import DEFAULT_KV_TYPES, FlashAttention, KVType


def gpt4all_models_dir() -> Path:
    """The GPT4All desktop app's model folder on this operating system."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "nomic.ai" / "GPT4All"
    if sys.platform.startswith("win"):
        local = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(local) / "nomic.ai" / "GPT4All"
    data = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data) / "nomic.ai" / "GPT4All"


def app_data_dir() -> Path:
    """This server's own data folder (stored responses, files, vector stores); never the models
    folder."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "gpt4all-api"
    if sys.platform.startswith("win"):
        local = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(local) / "gpt4all-api"
    data = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data) / "gpt4all-api"


def gpu_layers_value(value: object) -> str:
    """`auto`, `all` (or -1), or a number of layers >= 0, as a string."""
    text = str(value).strip().lower()
    if text in ("auto", "all"):
        return text
    if text == "-1":
        return "all"
    if text.isdigit():
        return str(int(text))
    raise ValueError(f"gpu_layers must be auto, all or a number of layers, not {value!r}")


def float_list(value: object) -> object:
    """`3,1` or `["3", "1"]` or `[3.0, 1.0]` -> `[3.0, 1.0]` (pydantic checks the floats)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [p.strip() for v in value for p in str(v).split(",") if p.strip()]
    return value


def _env(name: str, *legacy: str) -> AliasChoices:
    """The environment names of a setting: `GPT4ALL_API_<NAME>`, then its documented legacy
    names. The bare field name is never read from the environment (`HOST` and `PORT` belong to
    other programs); flags reach a field by its name (`populate_by_name`)."""
    return AliasChoices(f"GPT4ALL_API_{name.upper()}", *legacy)


class Settings(BaseSettings):
    """Everything the server can be told. Field names are also the CLI flags (`--models-dir`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    def __init__(self, **values: Any) -> None:
        """Keyword arguments by field name (`Settings(port=1)`, as the CLI passes flags)."""
        fields = type(self).model_fields
        super().__init__(
            **{f"GPT4ALL_API_{k.upper()}" if k in fields else k: v for k, v in values.items()}
        )

    host: str = Field(
        "127.0.0.1",
        validation_alias=_env("host"),
        description="Address to bind; anything but loopback is reachable from other machines.",
    )
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("port"), description="Port.")
    models_dir: Path = Field(
        default_factory=gpt4all_models_dir,
        validation_alias=_env("models_dir", "MODEL_PATH"),
        description="Folder of .gguf models (the GPT4All app's by default).",
    )
    default_model: str | None = Field(
        None,
        validation_alias=_env("default_model", "DEFAULT_MODEL"),
        description="Model used when a request names none: a file name in the models folder "
        "(default: the embedded SmolLM2).",
    )
    context_size: int = Field(
        2048,
        ge=64,
        validation_alias=_env("context_size"),
        description="Most tokens one sequence (a request's prompt and answer) holds.",
    )
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias=_env("threads"),
        description="CPU threads for llama.cpp (default: one per core).",
    )
    share_cores: bool = Field(
        True,
        validation_alias=_env("share_cores"),
        description="Decode on fewer threads while other processes use cores (Linux; the "
        "threads spin at their barriers, which collapses when a core is taken).",
    )
    lazy_kv: bool = Field(
        True,
        validation_alias=_env("lazy_kv"),
        description="Give the KV cache's pages back to the system until sequences write them "
        "(Linux): resident memory follows the tokens held, not slots x context.",
    )
    parallel: int = Field(
        16,
        ge=1,
        le=64,
        validation_alias=_env("parallel"),
        description="Most sequences decoded together in one batch.",
    )
    kv_unified: bool = Field(
        False,
        validation_alias=_env("kv_unified"),
        description="One KV pool of kv_size tokens shared by all sequences, instead of "
        "context_size per sequence: more sequences in the same memory, but greedy output may "
        "then differ in rare tokens with what else is running (attention sums the cells in "
        "pool order).",
    )
    kv_size: int | None = Field(
        None,
        ge=64,
        validation_alias=_env("kv_size"),
        description="With kv_unified: tokens the shared pool holds, all sequences together "
        "(default: context_size x min(parallel, 8)). When it runs short, idle sequences' "
        "cached prompts are dropped, then the newest running sequence waits and resumes.",
    )
    prompt_lookup: bool = Field(
        True,
        validation_alias=_env("prompt_lookup"),
        description="Prompt-lookup speculation: draft tokens from the sequence's own context and "
        "verify them in the same batch (output unchanged; faster only when answers copy long spans "
        "of their prompt).",
    )
    prompt_lookup_shared: bool = Field(
        True,
        validation_alias=_env("prompt_lookup_shared"),
        description="With prompt_lookup: also draft from one table of what followed every "
        "16-token span in any earlier prompt or answer (a question asked again drafts from the "
        "earlier answer). Output unchanged; an answer may come faster when another request's "
        "text matched.",
    )
    draft_max: int = Field(
        16,
        ge=1,
        le=64,
        validation_alias=_env("draft_max"),
        description="Most drafted tokens one sequence puts in a step (how many it does is "
        "decided from how often such drafts were right and what a token costs).",
    )
    prompt_cache_mb: int = Field(
        1024,
        ge=0,
        validation_alias=_env("prompt_cache_mb"),
        description="RAM (MiB) for the KV of prompts whose sequence was given to another prompt: "
        "a conversation that comes back after more others than there are slots is restored "
        "from it instead of prefilled again. 0 turns it off.",
    )
    batch_size: int = Field(
        512,
        ge=8,
        validation_alias=_env("batch_size"),
        description="Most tokens handed to llama_decode in one step.",
    )
    kv_cache_type: KVType | None = Field(
        None,
        validation_alias=_env("kv_cache_type"),
        description="KV cache precision of both keys and values (unless kv_cache_type_k or "
        "kv_cache_type_v say otherwise): q8_0 takes half the memory of f16. Default: q8_0 keys, "
        "f16 values.",
    )
    kv_cache_type_k: KVType | None = Field(
        None,
        validation_alias=_env("kv_cache_type_k"),
        description="KV cache precision of the keys (default q8_0, or kv_cache_type).",
    )
    kv_cache_type_v: KVType | None = Field(
        None,
        validation_alias=_env("kv_cache_type_v"),
        description="KV cache precision of the values (default f16, or kv_cache_type).",
    )
    flash_attention: FlashAttention = Field(
        "auto",
        validation_alias=_env("flash_attention"),
        description="Attention through llama.cpp's flash attention kernel (llama-server's -fa). "
        "auto: on with a q8_0 K or V cache, else llama.cpp's auto. off: on the CPU, long "
        "prompts prefill and generate several times faster, but greedy answers may then "
        "depend on the batching. A q8_0 V cache needs it on.",
    )
    # -- GPU offload (docs/gpu.md) -----------------------------------------------------------
    device: Literal["auto", "cpu", "gpu", "metal", "cuda", "vulkan"] = Field(
        "auto",
        validation_alias=_env("device"),
        description="Where models run, in GPT4All's words: auto (a GPU when the build has "
        "one), cpu, gpu, metal, cuda or vulkan.",
    )
    repack: Literal["auto", "on", "off"] = Field(
        "auto",
        validation_alias=_env("repack"),
        description="Repack weights for llama.cpp's faster CPU kernels (AVX2, AVX-512, NEON, "
        "Intel AMX), as llama-server's --repack: auto (on, except on a llama.cpp build with "
        "AMX kernels, which crash on some machines), on or off.",
    )
    gpu_layers: str = Field(
        "auto",
        validation_alias=_env("gpu_layers"),
        description="Layers offloaded to the GPU: auto (as many as fit in free device memory), "
        "all, or a number (0: none).",
    )
    main_gpu: int = Field(
        0,
        ge=0,
        validation_alias=_env("main_gpu"),
        description="The GPU used with --split-mode none (counted from 0).",
    )
    split_mode: Literal["layer", "row", "none"] = Field(
        "layer",
        validation_alias=_env("split_mode"),
        description="How several GPUs share a model: layer (whole layers each), row (rows of "
        "each layer; CUDA) or none (only --main-gpu).",
    )
    tensor_split: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("tensor_split"),
        description="Share of the layers each GPU gets, one value per GPU (3,1 in the "
        "environment; default: in proportion to their free memory).",
    )
    gpu_margin: int = Field(
        512,
        ge=0,
        validation_alias=_env("gpu_margin"),
        description="MiB of each GPU's free memory that gpu_layers=auto leaves unused.",
    )
    model_settings: Path | None = Field(
        None,
        validation_alias=_env("model_settings"),
        description="A TOML file of per-model settings (gpu_layers, device, main_gpu, "
        "split_mode, tensor_split), one table per model file name or pattern.",
    )

    prompt_batch_size: int = Field(
        128,
        ge=1,
        validation_alias=_env("prompt_batch_size"),
        description="Default prompt chunk per request per step while prefilling.",
    )
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        validation_alias=_env("temperature"),
        description="Sampling temperature of requests that give none (default 1.0; 0: greedy).",
    )
    reasoning_tags: str | None = Field(
        None,
        validation_alias=_env("reasoning_tags"),
        description=(
            "The thinking markers of a reasoning model whose chat template does not reveal them, "
            "as 'OPEN CLOSE' (e.g. '<reasoning> </reasoning>'). Known families need none."
        ),
    )
    reasoning_budget: int | None = Field(
        None,
        ge=0,
        validation_alias=_env("reasoning_budget"),
        description=(
            "The most tokens a reasoning model may spend thinking when a request sets no budget "
            "or effort; then the server closes the thinking and the model answers (0: no "
            "thinking). Default: no limit but max_tokens."
        ),
    )
    prompt_template: str = Field(
        "%1",
        validation_alias=_env("prompt_template"),
        description="Default completions prompt template (%1: the prompt).",
    )
    strict_max_tokens: bool = Field(
        True,
        validation_alias=_env("strict_max_tokens"),
        description="Refuse (400) a max_tokens that does not fit the context instead of clipping.",
    )
    reject_unknown_fields: bool = Field(
        True,
        validation_alias=_env("reject_unknown_fields"),
        description="Answer 400 to request fields we do not know; when off, log and drop them.",
    )
    log_level: str = Field(
        "info", validation_alias=_env("log_level"), description="debug, info, warning or error."
    )

    # -- stored state (Responses API) ----------------------------------------------------
    data_dir: Path = Field(
        default_factory=app_data_dir,
        validation_alias=_env("data_dir"),
        description="Where the server keeps its own data (stored responses, files, vector stores).",
    )
    responses_max_stored: int = Field(
        10_000,
        ge=0,
        validation_alias=_env("responses_max_stored"),
        description="Most stored responses kept; the oldest go first (0: store none).",
    )
    responses_max_age: float = Field(
        30 * 86400.0,
        ge=0,
        validation_alias=_env("responses_max_age"),
        description="Seconds a stored response is kept (0: no limit).",
    )

    database_url: str | None = Field(
        None,
        validation_alias=_env("database_url"),
        description="PostgreSQL URL (postgresql://...) for stored responses and LocalDocs (files, "
        "vector stores), so that every replica of a cluster sees them; none: SQLite in data_dir.",
    )

    # -- scale-out on Ray Serve (docs/scale-out.md) ------------------------------------------
    ray: bool = Field(
        False,
        validation_alias=_env("ray"),
        description="Serve as a Ray Serve application: engine replicas behind one endpoint, "
        "routed by prompt prefix.",
    )
    ray_address: str | None = Field(
        None,
        validation_alias=_env("ray_address"),
        description="Ray cluster to join (e.g. 10.0.0.1:6379; default: a local one on loopback).",
    )
    min_replicas: int = Field(
        1, ge=1, validation_alias=_env("min_replicas"), description="Fewest engine replicas."
    )
    max_replicas: int = Field(
        1,
        ge=1,
        validation_alias=_env("max_replicas"),
        description="Most engine replicas (autoscaled between the two on ongoing requests).",
    )
    target_ongoing_requests: float = Field(
        4.0,
        gt=0,
        validation_alias=_env("target_ongoing_requests"),
        description="Ongoing requests per replica the autoscaler aims for.",
    )
    upscale_delay: float = Field(
        30.0,
        ge=0,
        validation_alias=_env("upscale_delay"),
        description="Seconds the load must stay above target before a replica is added.",
    )
    downscale_delay: float = Field(
        600.0,
        ge=0,
        validation_alias=_env("downscale_delay"),
        description="Seconds the load must stay below target before a replica is removed.",
    )
    replica_cpus: float = Field(
        1.0,
        ge=0,
        validation_alias=_env("replica_cpus"),
        description="CPUs Ray reserves for each engine replica.",
    )
    routing: Literal["prefix", "pow2"] = Field(
        "prefix",
        validation_alias=_env("routing"),
        description="How requests pick a replica: prefix (the longest shared prompt prefix) "
        "or pow2 (Ray's default, power of two choices).",
    )
    imbalance_threshold: float = Field(
        4.0,
        ge=0,
        validation_alias=_env("imbalance_threshold"),
        description="Prefix routing gives way to the least loaded replica when the matching "
        "one has this many more ongoing requests.",
    )

    # -- LocalDocs: files and vector stores -------------------------------------------------
    max_file_size: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        validation_alias=_env("max_file_size"),
        description="Largest file upload (POST /v1/files) in bytes (413 past it).",
    )
    embedding_model: str | None = Field(
        None,
        validation_alias=_env("embedding_model"),
        description="Model that embeds new vector stores (default: nomic-embed-text from the "
        "models folder, else the embedded model as a stand-in).",
    )

    # -- model library: catalog, downloads, loaded models ---------------------------------
    catalog_url: str = Field(
        "https://gpt4all.io/models/models3.json",
        validation_alias=_env("catalog_url"),
        description="The GPT4All catalog (models3.json) to fetch; empty for none.",
    )
    catalog_cache: Path | None = Field(
        None,
        validation_alias=_env("catalog_cache"),
        description="Where the fetched catalog is cached (default: models3.json in models_dir).",
    )
    catalog_max_age: float = Field(
        86400.0,
        ge=0,
        validation_alias=_env("catalog_max_age"),
        description="Seconds before the cached catalog is fetched again.",
    )
    catalog_files: list[Path] = Field(
        default_factory=list,
        validation_alias=_env("catalog_files"),
        description="Extra local catalog files (models3.json format) whose URLs may be downloaded.",
    )
    download_reserve: int = Field(
        0,
        ge=0,
        validation_alias=_env("download_reserve"),
        description="Bytes of disk that must stay free after a download completes.",
    )
    max_loaded_models: int = Field(
        3,
        ge=1,
        validation_alias=_env("max_loaded_models"),
        description="Most models loaded at once; the least recently used idle one is unloaded.",
    )
    memory_budget: float | None = Field(
        None,
        ge=0,
        validation_alias=_env("memory_budget"),
        description="GiB of RAM loaded models may use (default: 3/4 of the RAM; 0: no limit).",
    )
    keep_alive: float = Field(
        300.0,
        validation_alias=_env("keep_alive"),
        description="Seconds an idle model stays loaded; negative keeps it loaded forever.",
    )

    # -- security, limits and operations ---------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("api_keys", "API_KEYS"),
        description="Keys accepted as `Authorization: Bearer <key>` (comma-separated); none: open.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("cors_origins"),
        description="Browser origins allowed by CORS (comma-separated, `*` for any); none: off.",
    )
    max_body_size: int = Field(
        1024 * 1024,
        ge=1024,
        validation_alias=_env("max_body_size"),
        description="Largest request body in bytes (413 past it).",
    )
    max_queue: int = Field(
        64,
        ge=0,
        validation_alias=_env("max_queue"),
        description="Requests that may wait for a slot per model (503 past it); 0: no limit.",
    )
    max_tokens_limit: int | None = Field(
        None,
        ge=1,
        validation_alias=_env("max_tokens_limit"),
        description="Most tokens one choice may generate (400 past it); none: the context.",
    )
    request_timeout: float = Field(
        300.0,
        ge=0,
        validation_alias=_env("request_timeout"),
        description="Seconds a generation request may run in all (queue included); 0: no limit.",
    )
    max_messages: int = Field(
        1000,
        ge=1,
        validation_alias=_env("max_messages"),
        description="Most messages in one chat request.",
    )
    max_prompt_chars: int = Field(
        200_000,
        ge=1,
        validation_alias=_env("max_prompt_chars"),
        description="Most characters in one request's messages (chat) or prompts (completions).",
    )
    shutdown_grace: float = Field(
        30.0,
        ge=0,
        validation_alias=_env("shutdown_grace"),
        description="Seconds running requests get to finish after SIGTERM.",
    )

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """`a,b` (environment), `["a", "b"]` (a JSON list in the environment) or `["a", "b,c"]`
        (repeated flags) -> `["a", "b", "c"]`."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(
                    'looks like a JSON list but is not valid JSON; write keys as a,b or ["a", "b"]'
                ) from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError('a JSON list of strings is expected, like ["a", "b"]')
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return [p.strip() for v in value for p in str(v).split(",") if p.strip()]
        return value

    @field_validator("max_replicas")
    @classmethod
    def _replica_bounds(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"max_replicas ({value}) is below min_replicas ({low})")
        return value

    @field_validator("reasoning_tags")
    @classmethod
    def _tag_pair(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 2:
            raise ValueError("two markers separated by a space are expected, like '<r> </r>'")
        return value

    @property
    def reasoning_markers(self) -> tuple[str, str] | None:
        if not self.reasoning_tags:
            return None
        open_, close = self.reasoning_tags.split()
        return open_, close

    @property
    def kv_types(self) -> tuple[str, str]:
        """The KV cache's (keys, values) precision: q8_0 keys and f16 values unless told."""
        k = self.kv_cache_type_k or self.kv_cache_type or DEFAULT_KV_TYPES[0]
        v = self.kv_cache_type_v or self.kv_cache_type or DEFAULT_KV_TYPES[1]
        return k, v

    @field_validator("flash_attention")
    @classmethod
    def _flash_needed(cls, value: str, info: ValidationInfo) -> str:
        v = info.data.get("kv_cache_type_v") or info.data.get("kv_cache_type")
        if value == "off" and v == "q8_0":
            raise ValueError("off needs f16 values: llama.cpp runs a q8_0 V cache only with it")
        return value

    @field_validator("device", "split_mode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: object) -> object:
        return gpu_layers_value(value)

    @field_validator("tensor_split", mode="before")
    @classmethod
    def _floats(cls, value: object) -> object:
        return float_list(value)

    @field_validator("models_dir", "data_dir", "model_settings", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        if isinstance(value, str | Path):
            return Path(value).expanduser()
        return value

    @field_validator(
        "default_model", "embedding_model", "database_url", "ray_address", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
