"""Every user error the fault campaign found as a traceback is now one line and exit 2, before
any session folder exists: broken board and SUT files, bad numbers on the command line, an
unusable runs dir, broken datasets, a model that cannot fit the board. Each case runs the real
``tinypower`` entry point (``main``) and reads what it printed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tinypower.cli import main
from tinypower.models import resolve_model
from tinypower.suites.benchmarks import get_suite

BOARD = """\
name = "user-board"
kind = "virtual"
core = "cortex-m4f"
clock_hz = 120_000_000

[memory]
flash_bytes = 2_097_152
ram_bytes = 655_360

[cycle_model]
cycles_per_mac = 4.5
overhead_cycles = 250_000

[energy_model]
idle_current_a = 0.0012
io_current_a = 0.0025
active_current_a = 0.0095
timestamp_hold_s = 0.0001

[monitor]
kind = "lpm01a"
voltage_v = 1.8
sample_rate_hz = 1000
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one message per line, as wide as it is


def usage_error(capsys, runs: Path, *argv: str | Path) -> str:
    """Run ``tinypower ARGV``; it must exit 2 with one error line and make no session."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("error: ") == 1 and err.startswith("error: ") or "\nerror: " in err, err
    assert "Traceback" not in err
    assert not list(runs.glob("*/session.json"))
    return err


def argparse_error(capsys, *argv: str | Path) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("old", "new", "message"), [
    ("clock_hz = 120_000_000", "clock_hz = 0",
     "clock_hz: expected an integer (Hz) from 1000 to 10000000000, found 0"),
    ("[memory]\nflash_bytes = 2_097_152\nram_bytes = 655_360\n", 'memory = "x"\n',
     "memory: expected a table [memory], found 'x'"),
    ('core = "cortex-m4f"\n', 'core = "cortex-m4f"\nuart = 9600\n',
     "uart: expected a table [uart], found 9600"),
    ('kind = "lpm01a"', 'kind = "wattmeter"',
     "[monitor] kind: expected one of joulescope, lpm01a, otii, ppk2, found 'wattmeter'"),
    ("voltage_v = 1.8", "voltage_v = nan",
     "[monitor] voltage_v: expected a finite number (V) > 0 and <= 5.5, found nan"),
    ('name = "user-board"\n', "", "name: missing (expected a name of letters"),
    ('name = "user-board"', 'name = "../../x"', "name: expected a name of letters, digits"),
    ('name = "user-board"', r"name = '$\undefined$'", "name: expected a name of letters"),
    ("cycles_per_mac = 4.5", 'cycles_per_mac = "fast"',
     "[cycle_model] cycles_per_mac: expected a finite number > 0 and <= 1e+06, found 'fast'"),
    ("sample_rate_hz = 1000", "sample_rate_hz = 1000\nrate = 3",
     "[monitor] rate: unknown key"),
])
def test_a_broken_board_file_names_file_key_expected_and_found(
    tmp_path, capsys, old, new, message
) -> None:
    assert old in BOARD
    path = tmp_path / "board.toml"
    path.write_text(BOARD.replace(old, new))
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--board", path, "--runs-dir", runs)
    assert f"{path}: {message}" in err


def test_every_problem_of_a_board_file_is_named_at_once(tmp_path, capsys) -> None:
    path = tmp_path / "board.toml"
    path.write_text(BOARD.replace("clock_hz = 120_000_000", "clock_hz = -1")
                    .replace("voltage_v = 1.8", "voltage_v = inf"))
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--board", path, "--runs-dir", runs)
    assert "clock_hz: expected" in err and "voltage_v: expected" in err


SUT = """\
name = "edge-box"
[workload]
command = ["true"]
[[meters]]
kind = "ptd"
address = "127.0.0.1:8888"
"""


@pytest.mark.parametrize(("extra", "message"), [
    ('[director]\nlisten = 4950\n', "[director] listen: expected HOST:PORT as a string"),
    ('[ranging]\nsettle_s = "0.5"\n',
     "[ranging] settle_s: expected a finite number (s) >= 0 and <= 3600, found '0.5'"),
    ("[limits]\nmax_uncertainty = nan\n", "[limits] max_uncertainty: expected a finite number"),
    ('[[meters]]\nkind = "ptd"\ntimeout_s = "5"\n',
     "[meters #2] timeout_s: expected a finite number, found '5'"),
    ('[[meters]]\nkind = "ptd"\nbaud = 9600\n', "[meters #2] baud: unknown key"),
    ('[[meters]]\nkind = "redfish"\naddress = "https://10.0.0.5"\nverify_tls = "no"\n',
     "[meters #2] verify_tls: expected true or false, found 'no'"),
])
def test_a_broken_sut_file_is_named_before_anything_runs(tmp_path, capsys, extra, message):
    path = tmp_path / "sut.toml"
    path.write_text(SUT + extra)
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--sut", path, "--runs-dir", runs)
    assert f"{path}: {message}" in err


@pytest.mark.parametrize(("text", "message"), [
    ('meters = "ptd"\n[workload]\ncommand = ["true"]\n',
     "meters: expected [[meters]] tables (kind, address, options), found 'ptd'"),
    ('[workload]\nmodel = "kws01"\nbatch = 4\n[[meters]]\nkind = "ptd"\n',
     "[workload] batch: unknown key"),
    ('[workload]\nmodel = "kws01"\nscenario = "Burst"\n[[meters]]\nkind = "ptd"\n',
     "[workload] scenario: expected one of SingleStream, MultiStream, Server, Offline"),
])
def test_sut_sections_of_the_wrong_shape(tmp_path, capsys, text, message) -> None:
    path = tmp_path / "sut.toml"
    path.write_text(text)
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--sut", path, "--runs-dir", runs)
    assert message in err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--warmups", "-3", "argument --warmups: -3 is below 0"),
    ("--iterations", "0", "argument --iterations: 0 is below 1"),
    ("--iterations", "ten", "argument --iterations: 'ten' is not a whole number"),
    ("--min-window-s", "nan", "argument --min-window-s: 'nan' is not a finite number"),
    ("--min-window-s", "-1", "argument --min-window-s: '-1' is not a finite number"),
    ("--min-window-s", "inf", "argument --min-window-s: 'inf' is not a finite number"),
])
def test_cli_numbers_are_checked(tmp_path, capsys, option, value, message) -> None:
    err = argparse_error(capsys, "measure", "--runs-dir", tmp_path, option, value)
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_runs_dir_that_is_a_file(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    err = usage_error(capsys, tmp_path, "measure", "--board", "sim-m4", "--runs-dir", runs)
    assert f"--runs-dir {runs} is a file, not a folder" in err


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write: a read-only tmpfs as root (root ignores file
    modes), else a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        folder.chmod(0o555)
    yield folder
    if mounted.returncode == 0:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.chmod(0o755)


def test_read_only_runs_dir(read_only_dir, capsys) -> None:
    err = usage_error(capsys, read_only_dir, "measure", "--board", "sim-m4", "--runs-dir",
                      read_only_dir)
    assert f"the runs folder {read_only_dir} is not writable" in err


def test_a_runs_dir_that_cannot_be_created(read_only_dir, capsys) -> None:
    runs = read_only_dir / "runs"
    err = usage_error(capsys, read_only_dir, "measure", "--board", "sim-m4", "--runs-dir", runs)
    assert f"cannot create the runs folder {runs}: its parent {read_only_dir} is not" in err


def dataset(tmp_path: Path, labels: bytes | str, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "y_labels.csv").write_bytes(labels if isinstance(labels, bytes)
                                          else labels.encode())
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


KWS_INPUT = bytes(490)


@pytest.mark.parametrize(("labels", "message"), [
    (b"\xff\xfe\x00\x01binary", "y_labels.csv is not a text CSV"),
    (b"a.bin,12,1\x00\n", "y_labels.csv is binary"),
    ("a.bin,12,999\n", "y_labels.csv:1: label 999 is not a kws01 class (expected 0 to 11)"),
    ("a.bin,12,-1\n", "y_labels.csv:1: label -1 is not a kws01 class"),
    ("../a.bin,12,1\n", "'../a.bin' is not a file name in the dataset folder"),
])
def test_broken_dataset_labels(tmp_path, capsys, labels, message) -> None:
    folder = dataset(tmp_path, labels, {"a.bin": KWS_INPUT})
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--board", "sim-m4", "--mode", "accuracy",
                      "--model", "synthetic", "--dataset", folder, "--runs-dir", runs)
    assert message in err


def test_a_folder_named_like_an_input_file(tmp_path, capsys) -> None:
    folder = tmp_path / "data"
    (folder / "x.bin").mkdir(parents=True)
    (folder / "a.bin").write_bytes(KWS_INPUT)
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--board", "sim-m4", "--mode", "accuracy",
                      "--model", "synthetic", "--dataset", folder, "--runs-dir", runs)
    assert "x.bin is a folder, not an input file" in err
    (folder / "y_labels.csv").write_text("x.bin,12,1\na.bin,12,2\n")
    err = usage_error(capsys, runs, "measure", "--board", "sim-m4", "--mode", "accuracy",
                      "--model", "synthetic", "--dataset", folder, "--runs-dir", runs)
    assert "x.bin is listed in y_labels.csv as an input file but is a folder" in err


def test_a_model_larger_than_the_boards_flash_is_refused_before_it_runs(tmp_path, capsys):
    model = resolve_model(get_suite("kws01"), "synthetic").data
    padded = tmp_path / "padded.tflite"
    padded.write_bytes(model + bytes(3 * 1024 * 1024))  # a valid model, padded past 2 MB
    runs = tmp_path / "runs"
    err = usage_error(capsys, runs, "measure", "--board", "sim-m4", "--model", padded,
                      "--runs-dir", runs)
    assert "sim-m4's flash holds 2,097,152 ([memory] flash_bytes)" in err


@pytest.mark.parametrize("option", ["--min-window-s", "--min-run-s"])
def test_check_numbers_are_checked(tmp_path, capsys, option) -> None:
    err = argparse_error(capsys, "check", tmp_path, option, "nan")
    assert f"argument {option}: 'nan' is not a finite number" in err
