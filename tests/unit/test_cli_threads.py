"""The CLI's OpenMP wait policy: chosen from GPT4ALL_API_THREAD_WAIT before llama.cpp loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpt4all_api import cli_threads
from gpt4all_api.cli_threads import ENV, apply, openmp_env


def test_choices_map_to_openmp_variables() -> None:
    assert openmp_env("passive") == {"OMP_WAIT_POLICY": "passive"}
    assert openmp_env(" Spin ") == {"OMP_WAIT_POLICY": "active"}
    assert openmp_env("inherit") == {}
    assert openmp_env("20000") == {"GOMP_SPINCOUNT": "20000"}
    with pytest.raises(ValueError):
        openmp_env("sometimes")


def test_apply_never_overrides_openmp_settings_already_made() -> None:
    env = {"OMP_WAIT_POLICY": "active", ENV: "passive"}
    assert apply(env) == {} and env["OMP_WAIT_POLICY"] == "active"
    env = {"GOMP_SPINCOUNT": "100"}
    assert apply(env) == {} and "OMP_WAIT_POLICY" not in env
    env = {}
    assert apply(env) == {"GOMP_SPINCOUNT": "100000"}  # the default
    env = {ENV: "bogus"}
    assert apply(env) == {"GOMP_SPINCOUNT": "100000"}
    env = {ENV: "1000"}
    assert apply(env) == {"GOMP_SPINCOUNT": "1000"} and env == {
        ENV: "1000",
        "GOMP_SPINCOUNT": "1000",
    }


def test_child_processes_do_not_inherit_what_the_cli_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_threads, "applied", {"OMP_WAIT_POLICY": "passive"})
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert "OMP_WAIT_POLICY" not in cli_threads.child_env()
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")  # changed since: the user's, kept
    assert cli_threads.child_env()["OMP_WAIT_POLICY"] == "active"


@pytest.mark.parametrize(("choice", "shown"), [(None, "PASSIVE"), ("spin", "ACTIVE")])
def test_libgomp_sees_the_policy_when_the_cli_is_imported(choice: str | None, shown: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.pop(ENV, None)
    if choice:
        env[ENV] = choice
    env["OMP_DISPLAY_ENV"] = "true"  # libgomp prints its settings when it loads
    proc = subprocess.run(
        [sys.executable, "-c", "import gpt4all_api.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"OMP_WAIT_POLICY = '{shown}'" in proc.stdout + proc.stderr
