"""Repacking weights for llama.cpp's extra CPU kernels: on by default, off on a build with AMX
kernels (they crash on some machines that report AMX), and the setting wins over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt4all_api.bench import servers
from gpt4all_api.bench.servers import ServerOptions, llama_cpp_command, llama_server_command
from gpt4all_api.engine.devices import cpu_features, repack_by_default
from gpt4all_api.library.model_settings import ModelSettings
from gpt4all_api.settings import Settings

AVX2 = {"AVX2": "1", "FMA": "1", "REPACK": "1"}
AMX = {**AVX2, "AVX512": "1", "AVX512_VNNI": "1", "AMX_INT8": "1"}


def test_auto_repacks_unless_the_build_has_amx_kernels() -> None:
    assert repack_by_default(AVX2)[0] is True
    repack, why = repack_by_default(AMX)
    assert repack is False and "AMX" in why and "--repack on" in why


def test_this_builds_cpu_features_are_read_from_llama_cpp() -> None:
    features = cpu_features()
    assert features, "llama_print_system_info names no CPU feature"
    assert all(v.isdigit() for v in features.values())
    assert repack_by_default()[0] == (features.get("AMX_INT8") != "1")


@pytest.mark.parametrize(("value", "repack"), [("auto", None), ("on", True), ("off", False)])
def test_the_setting_reaches_the_load_options(
    value: str, repack: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT4ALL_API_REPACK", value)
    assert ModelSettings.from_settings(Settings()).offload_for("m.gguf").repack is repack


def test_a_bad_value_is_refused() -> None:
    with pytest.raises(ValueError, match="REPACK"):
        Settings(repack="sometimes")


def test_llama_server_in_the_bench_lays_weights_out_as_we_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opts = ServerOptions(
        model_path=Path("/m/m.gguf"),
        threads=2,
        context_size=2048,
        batch_size=512,
        parallel=8,
        llama_server=Path("/opt/llama-server"),
    )
    monkeypatch.setattr(servers, "repack_by_default", lambda: repack_by_default(AMX))
    assert "--no-repack" in llama_server_command(opts, 1)
    # llama-cpp-python's server has no such flag: our shim takes it
    assert llama_cpp_command(opts, 1)[2:4] == ["gpt4all_api.bench.llama_cpp_server", "--no-repack"]
    monkeypatch.setattr(servers, "repack_by_default", lambda: repack_by_default(AVX2))
    assert "--no-repack" not in llama_server_command(opts, 1)
    assert "--no-repack" not in llama_cpp_command(opts, 1)


def test_the_devices_command_names_the_cpu_features_and_the_repack_choice() -> None:
    from click.testing import CliRunner

    from gpt4all_api.cli import main

    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0, result.output
    assert "CPU features llama.cpp uses: " in result.output
    assert f"repack auto: {repack_by_default()[1]}" in result.output
