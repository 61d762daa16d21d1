"""`serve`'s flags, generated from the `Settings` fields: one flag per field, so a new setting
is a new flag without anyone copying it by hand.

A field `models_dir` becomes `--models-dir`; its type gives the flag's (a bool is a
`--x/--no-x` switch, a `Literal` a choice, a list a repeatable flag) and its description the
help. A flag that is not given leaves the setting to the environment, `.env` and the default.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import click
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from .settings import Settings

#: Spellings older than the generated ones, still accepted (the first is shown in the help).
OTHER_NAMES: dict[str, tuple[str, ...]] = {
    "default_model": ("--model",),
    "api_keys": ("--api-key",),
}
#: Switches whose "off" spelling is not `--no-<name>`.
OFF_NAMES = {"strict_max_tokens": "--clip-max-tokens"}


_METAVARS = {int: "INT", float: "NUMBER", Path: "PATH"}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without `| None`, whether it is a list)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (str,)
        return item, True
    return annotation, False


def _bounds(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            out["min"] = m.ge
        elif isinstance(m, annotated_types.Le):
            out["max"] = m.le
    return out


def _param_type(annotation: Any, info: FieldInfo) -> click.ParamType:
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is int:
        return click.IntRange(**_bounds(info)) if _bounds(info) else click.INT
    if annotation is float:
        return click.FloatRange(**_bounds(info)) if _bounds(info) else click.FLOAT
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return click.Path(path_type=Path)
    if annotation is str:
        return click.STRING
    raise TypeError(f"no CLI flag type for a setting of type {annotation!r}")


def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def _help(info: FieldInfo, many: bool) -> str:
    text = (info.description or "").rstrip()
    if many:
        text += " Repeatable."
    default = _default_of(info)
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    if default not in (None, [], "") and not isinstance(default, bool):
        text += f" [default: {default}]"
    elif isinstance(default, bool):
        text += f" [default: {'on' if default else 'off'}]"
    return text.strip()


def option_for(name: str, info: FieldInfo) -> click.Option:
    """The click option of one settings field (its value is None when the flag is not given)."""
    annotation, many = _unwrap(info.annotation)
    names = [*OTHER_NAMES.get(name, ()), flag_of(name)]
    if annotation is bool:
        off = OFF_NAMES.get(name, "--no-" + flag_of(name)[2:])
        return click.Option(
            [f"{n}/{off}" if i == 0 else n for i, n in enumerate(names)] + [name],
            default=None,
            help=_help(info, False),
        )
    kind = _param_type(annotation, info)
    return click.Option(
        [*names, name],
        type=kind,
        metavar=None if isinstance(kind, click.Choice) else _METAVARS.get(annotation, "TEXT"),
        multiple=many,
        default=None,
        help=_help(info, many),
    )


def settings_options(command: click.Command) -> click.Command:
    """Give a click command one option per settings field, in the fields' order, before its
    own options."""
    options = [option_for(name, info) for name, info in Settings.model_fields.items()]
    command.params[:0] = options
    return command


def settings_from_flags(flags: dict[str, Any]) -> Settings:
    """Settings from the flags that were given, then the environment, `.env` and defaults.

    A flag not given is None (a repeatable one, empty); a bad value is a usage error naming
    its flag."""
    given = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in flags.items()
        if v is not None and v != () and k in Settings.model_fields
    }
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else ""
            field = loc.removeprefix("GPT4ALL_API_").lower()
            where = flag_of(field) if field in given else loc
            problems.append(f"{where}: {err['msg']}")
        raise click.UsageError("; ".join(problems)) from None
