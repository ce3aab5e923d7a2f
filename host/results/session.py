"""The session folder: everything a run measured and said, kept even when the run fails.

``runs/<UTC time>-<board>-<suite>-<mode>/`` holds ``session.json`` (config, versions, sha256 of
model and inputs, meter identity, clock checkpoints, status), ``transcript.log``, the meter's raw
stream, ``trace.npz``, ``results.json``, ``results.txt`` and plots. ``session.json`` is rewritten
at each checkpoint, so a crash leaves it saying where the run got to; a failed run is marked
``incomplete`` with its reason.
"""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tinypower.results.strict_json import dumps_strict


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Session:
    """One run's folder and its ``session.json``."""

    def __init__(self, runs_dir: Path, board: str, suite: str, mode: str, config: dict) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = runs_dir / f"{stamp}-{board}-{suite}-{mode}"
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        folder.mkdir(parents=True)
        self.folder = folder
        self.data: dict[str, Any] = {
            "status": "running",
            "started_utc": datetime.now(UTC).isoformat(),
            "board": board,
            "suite": suite,
            "mode": mode,
            "config": config,
            "versions": {
                "tinypower": _version("tinypower"),
                "python": platform.python_version(),
                "numpy": _version("numpy"),
                "tflite-micro": _version("tflite-micro"),
                "pyserial": _version("pyserial"),
                "platform": platform.platform(),
            },
            "argv": sys.argv,
            "artifacts": {},
            "checkpoints": [],
        }
        self.save()

    def path(self, name: str) -> Path:
        return self.folder / name

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def checkpoint(self, label: str, **clocks: float) -> None:
        """Record where the run is, with host monotonic time and any other clocks' readings."""
        self.data["checkpoints"].append(
            {"label": label, "host_monotonic_s": time.monotonic(), **clocks}
        )
        self.save()

    def add_artifact(self, name: str, data: bytes) -> None:
        """Record the sha256 of an input the run depends on (model, input files)."""
        self.data["artifacts"][name] = sha256_bytes(data)

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path(name)
        p.write_text(dumps_strict(obj, indent=2) + "\n")
        return p

    def finish(self, status: str, reason: str = "") -> None:
        """``complete`` or ``incomplete`` (with the reason); hash every file written."""
        self.data["status"] = status
        if reason:
            self.data["reason"] = reason
        self.data["finished_utc"] = datetime.now(UTC).isoformat()
        self.data["files"] = {
            p.name: sha256_bytes(p.read_bytes())
            for p in sorted(self.folder.iterdir())
            if p.is_file() and p.name != "session.json"
        }
        self.save()

    def save(self) -> None:
        tmp = self.path("session.json.tmp")
        tmp.write_text(dumps_strict(self.data, indent=2) + "\n")
        tmp.replace(self.path("session.json"))
