"""`gpt4all-api serve` has one flag per settings field, and every flag reaches the settings."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import click
import pytest
from click.testing import CliRunner

from gpt4all_api.cli import main, serve
from gpt4all_api.cli_settings import settings_from_flags
from gpt4all_api.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODEL_PATH", "DEFAULT_MODEL", "API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"GPT4ALL_API_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


def options() -> dict[str, click.Option]:
    return {p.name: p for p in serve.params if isinstance(p, click.Option) and p.name}


def parse(*args: str) -> Settings:
    ctx = serve.make_context("serve", list(args))
    return settings_from_flags(ctx.params)


def test_every_setting_has_a_flag_with_help() -> None:
    flags = options()
    missing = [name for name in Settings.model_fields if name not in flags]
    assert not missing, f"settings without a CLI flag: {missing}"
    for name in Settings.model_fields:
        assert flags[name].help, f"--{name} has no help"
        assert "--" + name.replace("_", "-") in flags[name].opts, name


#: Fields whose values are checked beyond their type.
SAMPLES: dict[str, tuple[list[str], Any]] = {
    "gpu_layers": (["12"], "12"),
    "tensor_split": (["3", "1"], [3.0, 1.0]),
    "kv_size": (["4096"], 4096),
}


def _sample(name: str, annotation: Any, default: Any, tmp: Path) -> tuple[list[str], Any]:
    """Values for one field's flag that differ from its default: (args after the flag, the
    value the setting should then hold)."""
    if name in SAMPLES:
        return SAMPLES[name]
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        values = ([str(tmp / "a.json"), str(tmp / "b.json")]) if item is Path else ["one", "two"]
        return values, [item(v) for v in values]
    if typing.get_origin(annotation) is Literal:
        other = next(c for c in typing.get_args(annotation) if c != default)
        return [other], other
    if annotation is int:
        value = (default or 0) + 1
        return [str(value)], value
    if annotation is float:
        value = (default or 0) + 1.5
        return [str(value)], value
    if annotation is Path:
        return [str(tmp / name)], tmp / name
    if name == "reasoning_tags":  # a pair of markers
        return ["<r> </r>"], "<r> </r>"
    if annotation is str:
        return [f"value-{name}"], f"value-{name}"
    raise AssertionError(f"no sample for {name}: {annotation}")


def test_every_flag_reaches_the_settings(tmp_path: Path) -> None:
    defaults = Settings()
    args: list[str] = []
    expected: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        option = options()[name]
        default = getattr(defaults, name)
        if info.annotation is bool:
            args.append(option.secondary_opts[0] if default else option.opts[0])
            expected[name] = not default
            continue
        values, expected[name] = _sample(name, info.annotation, default, tmp_path)
        for value in values:
            args += [option.opts[-1], value]
    settings = parse(*args)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name
        assert value != getattr(defaults, name), name


def test_flags_not_given_leave_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT4ALL_API_PORT", "7100")
    monkeypatch.setenv("API_KEYS", "k-one,k-two")
    monkeypatch.setenv("GPT4ALL_API_STRICT_MAX_TOKENS", "false")
    s = parse()
    assert s.port == 7100 and s.api_keys == ["k-one", "k-two"] and s.strict_max_tokens is False
    s = parse("--port", "7200", "--api-key", "k-three", "--strict-max-tokens")
    assert s.port == 7200 and s.api_keys == ["k-three"] and s.strict_max_tokens is True


def test_the_old_spellings_still_work() -> None:
    s = parse(
        "--model",
        "a.gguf",
        "--api-key",
        "k1",
        "--api-key",
        "k2,k3",
        "--clip-max-tokens",
        "--cors-origins",
        "http://a.example,http://b.example",
        "--cors-origins",
        "http://c.example",
    )
    assert s.default_model == "a.gguf" and s.api_keys == ["k1", "k2", "k3"]
    assert s.strict_max_tokens is False
    assert s.cors_origins == ["http://a.example", "http://b.example", "http://c.example"]
    assert parse("--default-model", "b.gguf").default_model == "b.gguf"


def test_bad_values_name_their_flag() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--parallel", "0"])
    assert result.exit_code == 2 and "--parallel" in result.output
    result = runner.invoke(main, ["serve", "--kv-cache-type", "q4"])
    assert result.exit_code == 2 and "--kv-cache-type" in result.output


def test_help_is_readable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--model", "--api-key", "--strict-max-tokens / --clip-max-tokens", "--kv-cache"):
        assert flag in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 100
