"""Per-model settings: a TOML file (`--model-settings`) whose tables override the GPU settings
for the models they name.

```toml
["Meta-Llama-3-8B-Instruct.Q4_0.gguf"]   # a model's file name (with or without .gguf)
gpu_layers = 20

["*Q8_0*"]                               # or a pattern (fnmatch), tried in file order
device = "cpu"
```

A model named exactly is matched first; otherwise the first pattern that matches. The keys are
the settings' names: `device`, `gpu_layers`, `main_gpu`, `split_mode`, `tensor_split`. The file
is read once, at startup; a mistake in it stops the server with a message naming the table.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..engine.offload import MiB, OffloadOptions
from ..settings import Settings, float_list, gpu_layers_value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class ModelOverrides(BaseModel):
    """The settings one model may override."""

    model_config = ConfigDict(extra="forbid")

    device: Annotated[
        Literal["auto", "cpu", "gpu", "metal", "cuda", "vulkan"] | None, BeforeValidator(_lower)
    ] = None
    gpu_layers: Annotated[str | None, BeforeValidator(gpu_layers_value)] = None
    main_gpu: int | None = Field(None, ge=0)
    split_mode: Annotated[Literal["layer", "row", "none"] | None, BeforeValidator(_lower)] = None
    tensor_split: Annotated[list[float] | None, BeforeValidator(float_list)] = None


class ModelSettingsError(RuntimeError):
    """The per-model settings file cannot be used."""


def _canonical(name: str) -> str:
    return name if name.lower().endswith(".gguf") else name + ".gguf"


class ModelSettings:
    """The server's GPU settings, with each model's overrides applied."""

    def __init__(self, base: OffloadOptions, tables: dict[str, ModelOverrides] | None = None):
        self.base = base
        self.tables = dict(tables or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSettings:
        base = OffloadOptions(
            device=settings.device,
            gpu_layers=settings.gpu_layers,
            main_gpu=settings.main_gpu,
            split_mode=settings.split_mode,
            tensor_split=tuple(settings.tensor_split),
            margin=settings.gpu_margin * MiB,
            repack=None if settings.repack == "auto" else settings.repack == "on",
        )
        if settings.model_settings is None:
            return cls(base)
        return cls(base, read_tables(settings.model_settings))

    def overrides_for(self, model_id: str) -> ModelOverrides | None:
        for name, table in self.tables.items():
            if _canonical(name) == _canonical(model_id):
                return table
        for name, table in self.tables.items():
            if fnmatch.fnmatchcase(model_id, name) or fnmatch.fnmatchcase(
                model_id, _canonical(name)
            ):
                return table
        return None

    def offload_for(self, model_id: str) -> OffloadOptions:
        table = self.overrides_for(model_id)
        if table is None:
            return self.base
        given = table.model_dump(exclude_none=True)
        if "tensor_split" in given:
            given["tensor_split"] = tuple(given["tensor_split"])
        return replace(self.base, **given)

    def all_options(self) -> dict[str, OffloadOptions]:
        """The server's options (key `*`) and each table's, to check at startup."""
        out = {"*": self.base}
        for name in self.tables:
            out[name] = self.offload_for(name)
        return out


def read_tables(path: Path) -> dict[str, ModelOverrides]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelSettingsError(f"cannot read the model settings file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelSettingsError(f"{path} is not valid TOML: {exc}") from exc
    tables: dict[str, ModelOverrides] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ModelSettingsError(
                f'{path}: {name!r} must be a table (["model.gguf"]) of settings'
            )
        try:
            tables[name] = ModelOverrides.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ModelSettingsError(f"{path}: [{name!r}] {problems}") from None
    return tables
