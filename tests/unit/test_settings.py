from pathlib import Path

import pytest

from gpt4all_api.cli import _settings
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
