"""Checks before a run: a run that cannot succeed stops with one line and exit 2, before any
session folder or store row exists."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tinypower.cli import main

MODELS = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "mlperf-tiny"


def _refused(capsys: pytest.CaptureFixture, runs: Path, *argv: str) -> str:
    assert main(["measure", "--runs-dir", str(runs), *argv]) == 2
    err = capsys.readouterr().err
    assert not runs.exists(), "a refused run must leave no session folder or store"
    assert "Traceback" not in err and err.count("error:") == 1, err
    return err


def test_model_that_does_not_fit_the_suite_is_refused(tmp_path, capsys) -> None:
    model = MODELS / "pretrainedResnet_quant.tflite"
    if not model.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{model} missing")
        pytest.skip(f"{model} absent: shared models not on this machine")
    err = _refused(capsys, tmp_path / "runs", "--board", "sim-m4", "--suite", "kws01",
                   "--model", str(model))
    assert "takes 3072 inputs but a kws01 input has 490" in err and "--suite ic01" in err


def test_emulated_board_without_qemu_is_refused(tmp_path, capsys, monkeypatch) -> None:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "arm-none-eabi-gcc").symlink_to(gcc)
    monkeypatch.setenv("PATH", str(bin_dir))  # the toolchain, and no QEMU
    err = _refused(capsys, tmp_path / "runs", "--board", "qemu-an386", "--model", "synthetic")
    assert "qemu-system-arm not found on PATH" in err and "apt-get install qemu-system-arm" in err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    err = _refused(capsys, tmp_path / "runs", "--board", "qemu-an386", "--model", "synthetic")
    assert "arm-none-eabi-gcc not found on PATH" in err


def test_hardware_board_ports_are_checked_before_the_run(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    err = _refused(capsys, runs, "--board", "nucleo-l4r5zi", "--mode", "performance",
                   "--port", str(tmp_path / "ttyACM7"), "--model", "synthetic")
    assert f"UART port {tmp_path / 'ttyACM7'} does not exist" in err
    leader, follower = os.openpty()  # a real serial-like device for the UART
    try:
        uart = os.ttyname(follower)
        err = _refused(capsys, runs, "--board", "nucleo-l4r5zi", "--mode", "energy", "--port",
                       uart, "--monitor-port", str(tmp_path / "ttyACM9"), "--model", "synthetic")
        assert f"lpm01a energy monitor port {tmp_path / 'ttyACM9'} does not exist" in err
    finally:
        os.close(leader)
        os.close(follower)


def test_sut_meters_this_machine_cannot_read_are_refused_first(tmp_path, capsys) -> None:
    empty = tmp_path / "powercap"
    empty.mkdir()
    sut = tmp_path / "sut.toml"
    sut.write_text(f'name = "cpu"\n[workload]\ncommand = ["true"]\n'
                   f'[[meters]]\nkind = "rapl"\naddress = "{empty}"\n')
    runs = tmp_path / "runs"
    assert main(["measure", "--sut", str(sut), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "the rapl meter (rapl) cannot be read here: no RAPL zones" in " ".join(err.split())
    assert not runs.exists()


def test_sut_advice_names_the_sut_file_fix_not_a_cli_option(tmp_path, capsys,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "empty-cache"))
    sut = tmp_path / "sut.toml"
    sut.write_text('name = "cpu"\n[workload]\nmodel = "kws01"\n[[meters]]\nkind = "rapl"\n')
    assert main(["measure", "--sut", str(sut), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "set [workload] model to a .tflite path" in err and "--model" not in err
