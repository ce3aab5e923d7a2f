"""Files and processes a run leaves behind: exports write only inside the folder the user named,
CSV cells a spreadsheet would execute are neutralised, ``--sut local`` leaves no temp folder,
and a child process dies with its parent even when the parent is killed with ``kill -9``."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tinypower.cli import main
from tinypower.results.db import add_records
from tinypower.results.exports import ExportError, export_tiny
from tinypower.results.record import ResultRecord


def test_a_session_naming_a_board_with_dotdot_cannot_export_outside_out(sessions, tmp_path):
    folder = shutil.copytree(sessions["energy"], tmp_path / "session")
    data = json.loads((folder / "session.json").read_text())
    data["board"] = "../../../escaped"
    (folder / "session.json").write_text(json.dumps(data))
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(ExportError, match="cannot be used in a folder name"):
        export_tiny(folder, out)
    assert not [p for p in tmp_path.rglob("*escaped*")]
    assert main(["export", str(folder), "--format", "tiny", "--out", str(out)]) == 2


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path, capsys) -> None:
    hostile = ResultRecord(
        system="=HYPERLINK(\"http://x\",\"y\")", scale="tiny", benchmark="+kws01",
        scenario="-energy", metric="@median", value=-1.5, unit="\tuJ", measured_as="simulated",
        meter="\r=1+1", source="/runs/a", extras={"reason": "=cmd|' /C calc'!A0"},
    )
    plain = ResultRecord(system="sim-m4", scale="tiny", benchmark="kws01", scenario="energy",
                         metric="median_energy", value=1.25, unit="uJ/inf",
                         measured_as="simulated", source="/runs/b")
    db = tmp_path / "results.sqlite"
    add_records(db, [hostile, plain])
    out = tmp_path / "out.csv"
    assert main(["results", "--db", str(db), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    bad = next(r for r in rows if r["source"] == "/runs/a")
    for column in ("system", "benchmark", "scenario", "metric", "unit", "meter"):
        assert bad[column].startswith("'"), (column, bad[column])
    assert bad["system"] == "'=HYPERLINK(\"http://x\",\"y\")"  # the text itself is kept
    assert bad["value"] == "-1.5"  # a number stays a number
    assert json.loads(bad["extras"])["reason"] == "=cmd|' /C calc'!A0"  # inside JSON: inert
    good = next(r for r in rows if r["source"] == "/runs/b")
    assert good["system"] == "sim-m4" and good["unit"] == "uJ/inf"


def test_sut_local_keeps_the_built_in_model_in_the_runs_dir(tmp_path, monkeypatch) -> None:
    from tinypower.scale.commands import local_sut

    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a temp folder goes
    runs = tmp_path / "runs"
    paths = []
    for _ in range(2):
        sut, simulator, _ = local_sut(True, runs)
        if simulator is not None:
            simulator.close()
        paths.append(sut.workload.model)
    assert paths[0] == paths[1] and paths[0].parent == runs / "models"
    assert paths[0].is_file() and not list((tmp_path / "tmp").iterdir())


PARENT = """
import subprocess, sys, time
from tinypower.children import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_dies_with_its_parent_even_on_kill_9() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    os.kill(child_pid, 0)  # running
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        # Reaped by init once it exits; a zombie of ours cannot be (it is not our child).
        status = Path(f"/proc/{child_pid}/status")
        if status.is_file() and "State:\tZ" in status.read_text():
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the child outlived its parent")


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "$\\undefined$", "..", "a b\x00c"])
def test_a_session_folder_stays_in_its_runs_dir_whatever_the_names(tmp_path, name) -> None:
    from tinypower.results.session import Session

    session = Session(tmp_path, name, name, "monitor", config={})
    assert session.folder.parent == tmp_path and session.folder.is_dir()
    assert json.loads((session.folder / "session.json").read_text())["board"] == name
