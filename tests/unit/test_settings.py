from pathlib import Path

import pytest

from gpt4all_api.cli import _settings
from gpt4all_api.engine.kv_types import flash_attention_on
from gpt4all_api.settings import Settings, gpt4all_models_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MODEL_PATH", "DEFAULT_MODEL", "GPT4ALL_API_PORT", "GPT4ALL_API_PARALLEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.models_dir == gpt4all_models_dir()
    assert s.default_model is None and s.prompt_template == "%1"


def test_linux_gpt4all_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert gpt4all_models_dir() == Path.home() / ".local/share/nomic.ai/GPT4All"


def test_precedence_cli_over_env_over_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "DEFAULT_MODEL=from-dotenv.gguf\nGPT4ALL_API_PORT=7000\nMODEL_PATH=/dotenv/models\n"
    )
    s = Settings()
    assert s.default_model == "from-dotenv.gguf" and s.port == 7000
    assert s.models_dir == Path("/dotenv/models")
    monkeypatch.setenv("DEFAULT_MODEL", "from-env.gguf")
    monkeypatch.setenv("GPT4ALL_API_PORT", "7100")
    s = Settings()
    assert s.default_model == "from-env.gguf" and s.port == 7100
    s = _settings(default_model="from-cli.gguf", port=None, models_dir=Path("/cli"))
    assert s.default_model == "from-cli.gguf" and s.port == 7100
    assert s.models_dir == Path("/cli")


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT4ALL_API_PARALLEL", "0")
    with pytest.raises(ValueError):
        Settings()


def test_generic_variable_names_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("HOST", "0.0.0.0"), ("PORT", "9"), ("THREADS", "7"), ("PARALLEL", "3")):
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000 and s.parallel == 16 and s.threads != 7
    monkeypatch.setenv("GPT4ALL_API_HOST", "0.0.0.0")
    assert Settings().host == "0.0.0.0"


@pytest.mark.parametrize(
    ("raw", "keys"),
    [("k-one,k-two", ["k-one", "k-two"]), ('["k-one","k-two"]', ["k-one", "k-two"])],
)
def test_api_keys_as_commas_or_json(monkeypatch: pytest.MonkeyPatch, raw: str, keys: list) -> None:
    monkeypatch.setenv("API_KEYS", raw)
    assert Settings().api_keys == keys


def test_broken_json_keys_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", '["k-one", k-two]')
    with pytest.raises(ValueError, match="JSON"):
        Settings()


def test_binding_beyond_loopback_is_warned() -> None:
    from gpt4all_api.app import exposure_warning

    assert exposure_warning(Settings()) is None
    assert exposure_warning(_settings(host="localhost")) is None
    assert exposure_warning(_settings(host="::1")) is None
    loud = exposure_warning(_settings(host="0.0.0.0"))
    assert loud is not None and "WITHOUT AN API KEY" in loud
    quiet = exposure_warning(_settings(host="0.0.0.0", api_keys=["k"]))
    assert quiet is not None and "API KEY" not in quiet


def test_server_temperature_fills_in_for_requests_without_one() -> None:
    from gpt4all_api.core.plan import Sampling
    from gpt4all_api.core.run import sampling_params

    assert _settings(temperature=0).temperature == 0
    assert sampling_params(Sampling(), None, None, 0.0).temperature == 0.0  # type: ignore[arg-type]
    assert sampling_params(Sampling(temperature=0.7), None, None, 0.0).temperature == 0.7  # type: ignore[arg-type]
    assert sampling_params(Sampling(), None).temperature == 1.0  # type: ignore[arg-type]


def test_kv_cache_types_default_to_q8_0_keys_and_f16_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().kv_types == ("q8_0", "f16")
    # the one-type setting (as before the two were apart) sets both
    monkeypatch.setenv("GPT4ALL_API_KV_CACHE_TYPE", "q8_0")
    assert Settings().kv_types == ("q8_0", "q8_0")
    # a type of its own for keys or values wins over it
    assert Settings(kv_cache_type_v="f16").kv_types == ("q8_0", "f16")
    monkeypatch.setenv("GPT4ALL_API_KV_CACHE_TYPE", "f16")
    assert Settings(kv_cache_type_k="q8_0").kv_types == ("q8_0", "f16")
    monkeypatch.delenv("GPT4ALL_API_KV_CACHE_TYPE")
    monkeypatch.setenv("GPT4ALL_API_KV_CACHE_TYPE_V", "q8_0")
    assert Settings().kv_types == ("q8_0", "q8_0")
    with pytest.raises(ValueError):
        Settings(kv_cache_type_k="q4_0")


def test_flash_attention_follows_the_kv_types_unless_told() -> None:
    # auto: on with a q8_0 cache (one query row at a time: batch-invariant sums), else
    # llama.cpp's own auto (None)
    assert flash_attention_on("auto", ("q8_0", "f16")) is True
    assert flash_attention_on("auto", ("f16", "f16")) is None
    assert flash_attention_on("off", ("q8_0", "f16")) is False
    assert flash_attention_on("on", ("f16", "f16")) is True
    assert Settings(flash_attention="off").flash_attention == "off"
    # llama.cpp runs a q8_0 V cache only with flash attention
    with pytest.raises(ValueError, match="f16 values"):
        Settings(flash_attention="off", kv_cache_type_v="q8_0")
    with pytest.raises(ValueError, match="f16 values"):
        Settings(flash_attention="off", kv_cache_type="q8_0")
    with pytest.raises(ValueError):
        Settings(flash_attention="maybe")
