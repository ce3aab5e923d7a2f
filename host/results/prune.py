"""``tinypower prune``: remove old session folders under a runs folder, and their store rows.

A session folder is a folder under ``--runs-dir`` (at any depth, not through symlinks) holding
the file the result store knows it by: ``session.json`` (``measure``, ``monitor``),
``power/server.json`` (``measure --sut``) or ``training.json`` (``training-energy``); its age
is that file's modification time, which the session rewrites until it ends. Nothing is removed
unless ``--delete`` is given: without it the command lists what would go and how much space that
frees, so a dry run always comes first.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tinypower.results.db import DEFAULT_DB, remove_sources
from tinypower.results.record import POWER_SESSION_FILE, TRAINING_FILE

SECONDS_PER_DAY = 86_400.0
MARKERS = ("session.json", POWER_SESSION_FILE, TRAINING_FILE)


class PruneError(ValueError):
    """Prune was asked something it cannot do; the message says what to pass."""


@dataclass(frozen=True)
class SessionFolder:
    path: Path
    modified_s: float  # session.json's mtime, UTC epoch seconds
    size_bytes: int


def session_folders(runs_dir: Path) -> list[SessionFolder]:
    """Every session folder under ``runs_dir``, newest first."""
    found = []
    for root, dirs, _ in os.walk(runs_dir):  # os.walk does not follow symlinks
        folder = Path(root)
        marker = next((folder / m for m in MARKERS if (folder / m).is_file()), None)
        if marker is not None:
            found.append(SessionFolder(folder, marker.stat().st_mtime, _size(folder)))
            dirs.clear()  # a session's own subfolders are part of it
    return sorted(found, key=lambda s: s.modified_s, reverse=True)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def to_prune(runs_dir: Path, older_than_days: float | None, keep: int | None,
             now_s: float | None = None) -> list[SessionFolder]:
    """The sessions older than ``older_than_days``, or beyond the newest ``keep`` (either or
    both: a session goes if any rule given selects it)."""
    if older_than_days is None and keep is None:
        raise PruneError("say what to prune: --older-than DAYS and/or --keep N (the newest N "
                         "sessions stay)")
    if (older_than_days is not None and older_than_days < 0) or (keep is not None and keep < 0):
        raise PruneError("--older-than and --keep take numbers >= 0")
    if not runs_dir.is_dir():
        raise PruneError(f"no runs folder at {runs_dir}: pass --runs-dir")
    now_s = time.time() if now_s is None else now_s
    sessions = session_folders(runs_dir)
    return [s for rank, s in enumerate(sessions)
            if (keep is not None and rank >= keep)
            or (older_than_days is not None
                and now_s - s.modified_s > older_than_days * SECONDS_PER_DAY)]


def prune(runs_dir: Path, sessions: list[SessionFolder], db: Path | None = None) -> int:
    """Delete these session folders and their records in the store; return the records
    removed."""
    for s in sessions:
        shutil.rmtree(s.path)
    sources = {str(p) for s in sessions for p in (s.path, s.path.resolve())}
    return remove_sources(db or runs_dir / DEFAULT_DB.name, sources)
