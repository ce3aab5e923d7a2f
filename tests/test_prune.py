"""`tinypower prune`: a dry run first, then old sessions and their store rows go, nothing else."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tinypower.cli import main
from tinypower.results.db import add_session, query


def _runs(sessions: dict[str, Path], tmp_path: Path) -> tuple[Path, list[Path]]:
    """Three copies of the real sessions, 30, 10 and 1 days old, indexed in one store."""
    runs = tmp_path / "runs"
    folders = []
    for age_days, name in ((30, "old"), (10, "middle"), (1, "new")):
        folder = shutil.copytree(sessions["energy"], runs / "power" / name if name == "middle"
                                 else runs / name)
        when = time.time() - age_days * 86_400
        add_session(runs / "results.sqlite", folder)
        marker = folder / "session.json"
        if name == "middle":  # as a training session: known by its training.json
            marker = marker.rename(folder / "training.json")
        os.utime(marker, (when, when))
        folders.append(folder)
    (runs / "notes").mkdir()  # not a session: never touched
    return runs, folders


def test_prune_lists_first_then_deletes_old_sessions_and_their_rows(sessions, tmp_path,
                                                                     capsys) -> None:
    runs, (old, middle, new) = _runs(sessions, tmp_path)
    assert main(["prune", "--runs-dir", str(runs), "--older-than", "7"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        f"would delete {middle}", f"would delete {old}"]  # newest first
    assert "dry run: 2 session(s)" in err and old.is_dir() and middle.is_dir()
    assert len(query(runs / "results.sqlite")) == 3
    assert main(["prune", "--runs-dir", str(runs), "--older-than", "7", "--delete"]) == 0
    assert "deleted 2 session(s)" in capsys.readouterr().err
    assert not old.exists() and not middle.exists() and new.is_dir() and (runs / "notes").is_dir()
    assert [r.source for r in query(runs / "results.sqlite")] == [str(new)]


def test_prune_keeps_the_newest_n_and_needs_a_rule(sessions, tmp_path, capsys) -> None:
    runs, (old, middle, new) = _runs(sessions, tmp_path)
    assert main(["prune", "--runs-dir", str(runs), "--keep", "2", "--delete"]) == 0
    assert not old.exists() and middle.is_dir() and new.is_dir()
    capsys.readouterr()
    assert main(["prune", "--runs-dir", str(runs)]) == 2
    assert "--older-than DAYS and/or --keep N" in capsys.readouterr().err
    assert main(["prune", "--runs-dir", str(tmp_path / "absent"), "--keep", "1"]) == 2
