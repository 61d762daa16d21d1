"""Whole-process profiles of a server under load, with py-spy."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Profiler:
    """py-spy, recording our server's whole process (native frames, every thread, idle ones
    too) during one concurrency level; the output goes to `directory`."""

    def __init__(self, pid: int, server: str, directory: Path, level: int, fmt: str = "speedscope"):
        self.pid, self.server, self.directory = pid, server, directory
        self.at_level, self.fmt = level, fmt
        self.written: list[str] = []

    def command(self, out: Path) -> list[str]:
        return py_spy_command(self.pid, out, self.fmt)

    def out_path(self, level: int, tag: str) -> Path:
        ext = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}[self.fmt]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.server}{tag}").strip("-")
        return self.directory / f"{slug}-{level}c.{ext}"

    @contextlib.contextmanager
    def level(self, level: int, tag: str) -> Any:
        if level != self.at_level:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.out_path(level, tag)
        proc = subprocess.Popen(
            self.command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(1.0)  # py-spy attaches
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if out.exists():
                self.written.append(str(out))
                log.info("profile written to %s", out)
            else:
                log.warning("py-spy wrote no profile: %s", err.decode(errors="replace")[-500:])


def py_spy_command(pid: int, out: Path, fmt: str = "speedscope") -> list[str]:
    """A whole-process profile: native frames, one stack per thread, idle threads included."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [
        exe,
        "record",
        "--pid",
        str(pid),
        "--native",
        "--threads",
        "--idle",
        "--rate",
        "100",
        "--format",
        fmt,
        "--output",
        str(out),
    ]
