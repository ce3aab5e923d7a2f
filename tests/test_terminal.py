"""Terminal manners, through a real ``tinypower`` process: output piped to a file or another
program is never wrapped, progress there is plain lines, a closed pipe ends quietly, and text
from files reaches the terminal with its control characters escaped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinypower.terminal import printable, shown

CLI = [sys.executable, "-m", "tinypower.cli"]


def _long_dir(tmp_path: Path) -> Path:
    folder = tmp_path / ("a-rather-long-folder-name-" * 4) / ("and-another-one-" * 4)
    folder.mkdir(parents=True)
    return folder


def test_piped_output_is_full_width_with_plain_progress(tmp_path: Path) -> None:
    runs = _long_dir(tmp_path) / "runs"
    assert len(str(runs)) > 200
    done = subprocess.run([*CLI, "measure", "--runs-dir", str(runs)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sessions = [line for line in done.stdout.splitlines() if " session: " in line]
    folders = [Path(line.split(": ", 1)[1]) for line in sessions]  # whole, on one line each
    assert len(folders) == 2 and all(f.parent == runs and f.is_dir() for f in folders)
    assert "\x1b[" not in done.stdout + done.stderr  # no colour codes in a pipe
    # the monitor is named, and mean power is in the JSON's unit (extras.mean_power_uw)
    assert "DUT timer" in done.stdout and "lpm01a X-NUCLEO-LPM01A" in done.stdout
    assert " uW, N=" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith(("performance",
                                                                               "energy"))]
    assert progress[0].startswith("performance: calibrating N  0/1  ")
    assert any(line.startswith("energy windows done  5/5  ") and line.endswith(" s")
               for line in progress)


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "table"])
def test_closed_pipe_ends_quietly(tmp_path: Path, output: list[str]) -> None:
    child = subprocess.Popen([*CLI, "measure", *output, "--runs-dir", str(tmp_path / "runs")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    child.stdout.close()  # as `| head -0` would: the reader is gone before the first line
    _, err = child.communicate(timeout=300)
    assert child.returncode == 141, err.decode()  # the table goes through rich's console
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_control_characters_from_files_are_escaped(tmp_path: Path) -> None:
    evil = tmp_path / "\x1b[2J\x1b[31mfake.tflite"
    done = subprocess.run([*CLI, "measure", "--model", str(evil), "--runs-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert "\\x1b[2J\\x1b[31mfake.tflite" in done.stderr
    assert "\x1b" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_printable_escapes_controls_but_keeps_lines_and_text() -> None:
    assert printable("ok\tline\nnext") == "ok\tline\nnext"
    assert printable("a\x1b[0mb\x07\r\x9b\u202e") == "a\\x1b[0mb\\x07\\r\\x9b\\u202e"
    assert printable("µW ±") == "µW ±"
    assert shown("[bold]\x1b") == "\\[bold]\\x1b"


def test_on_a_terminal_progress_is_the_rich_bar(tmp_path: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()  # stderr is a real terminal; stdout stays a pipe
    child = subprocess.Popen([*CLI, "measure", "--mode", "performance", "--runs-dir",
                              str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=follower,
                             cwd=tmp_path, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0
    text = seen.decode(errors="replace")
    assert "━" in text and "\x1b[" in text  # the bar, drawn with terminal control sequences
    assert "calibrating N  0/1" not in text  # no plain progress lines on a terminal
    assert b"\x1b[" not in out  # stdout, a pipe, gets no colour codes
