"""Conformance: the MLCommons Tiny runner, unmodified, measures our virtual bench.

The runner (``../shared/oracles/mlcommons-tiny/benchmark/runner/``, its own ``main.py`` with
YAML device and test files written here) runs as a subprocess against our software DUT, our
MLCommons interface-board simulator and our LPM01A simulator, each on a real pty. Only its USB
discovery is replaced (``mlcommons_launch.py``: a pty has no VID/PID). What it reports is
compared with what the DUT computed, with our own runner on the same virtual DUT, and with the
simulator's ground truth (the exact integral of the supply current between the timestamp
edges):

- performance: its per-window throughput equals N over the DUT's lap difference, and our
  runner's median throughput;
- accuracy: the result vector it parsed for every file is the host reference model's, and its
  Top-1 is the argmax score of those vectors against the labels we wrote;
- energy (through the interface board, LPM01A powering the DUT): its median energy per
  inference is within 0.1 % of the ground truth and of our runner's.

The oracle missing is a skip on a developer machine and a failure when ``CI`` is set.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator
from tinypower.boards import load_board
from tinypower.dut.io_manager_sim import IoManagerSimulator
from tinypower.dut.software_dut import SoftwareDut
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import load_dataset
from tinypower.suites.reference import ReferenceModel

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT.parent / "shared" / "oracles" / "mlcommons-tiny" / "benchmark" / "runner"
LAUNCH = Path(__file__).with_name("mlcommons_launch.py")
RUNNER_MODULES = ("yaml", "numpy", "sklearn", "matplotlib", "serial", "usb")
SUITE = get_suite("kws01")
MODEL = resolve_model(SUITE, "synthetic")
BOARD = load_board("sim-m4")
ENERGY_BAUD = BOARD.uart_baud["energy"]
FILES = 12  # one input per KWS class: the runner's one-vs-rest AUC needs every class
ENERGY_WINDOW_S = 2.0  # wall time per window: 1 ms edge rounding is <= 0.05 % of it
ENERGY_WARMUPS = 1
# USB IDs of the instruments each simulator stands for (the runner's devices_kws_ic_vww.yaml).
INTERFACE_USB = (0x0483, 0x374E)  # stm32h573i-dk
LPM01A_USB = (0x0483, 0x5740)
DUT_USB = (0x0483, 0x374B)  # l4r5zi


def _require_runner() -> None:
    missing = [] if (RUNNER / "main.py").is_file() else [f"{RUNNER}/main.py"]
    missing += [m for m in RUNNER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        why = (
            f"the MLCommons runner cannot run here, missing: {', '.join(missing)} (the oracle "
            "comes with ../shared/oracles; its modules with `pip install -e .[dev]`)"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kws01 folder in the runner's layout: ``y_labels.csv`` and one input per class."""
    root = tmp_path_factory.mktemp("datasets")
    folder = root / "kws01"
    folder.mkdir()
    rng = np.random.default_rng(11)
    with (folder / "y_labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        for label in range(FILES):
            name = f"tst_{label:06d}_synthetic_{label}.bin"
            data = rng.integers(0, 256, SUITE.input_bytes, dtype=np.uint8).tobytes()
            (folder / name).write_bytes(data)
            writer.writerow([name, FILES, label])
    return root


@dataclass
class RunnerOutput:
    text: str  # results.txt
    results: list[dict]  # results.json
    log: str  # stdout (the runner logs there and to sessions/*/log.txt)


def run_mlcommons(
    workdir: Path, mode: str, devices: list[dict], ports: list[dict], script: list,
    datasets: Path, timeout_s: float = 180, fails_with: str | None = None,
) -> RunnerOutput:
    """Write the runner's YAML files, run its main.py on our ptys, return what it wrote.

    With ``fails_with``, the run must print that text (its traceback); the runner then hangs
    on its non-daemon reader threads, so it is stopped once the text is seen."""
    workdir.mkdir()
    (workdir / "devices.yaml").write_text(_yaml(devices))
    (workdir / "tests.yaml").write_text(_yaml({
        "kws01": {"name": "keyword_spotting", "model": "kws01", "truth_file": "y_labels.csv",
                  "script": script},
    }))
    (workdir / "ports.json").write_text(json.dumps(ports))
    command = [sys.executable, str(LAUNCH), str(RUNNER), "ports.json", "--", "-d",
               "devices.yaml", "-t", "tests.yaml", "-s", str(datasets), "-m", mode]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if fails_with is not None:
        return _run_until(command, workdir, env, fails_with, timeout_s)
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    assert proc.returncode == 0, f"runner failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (session,) = (workdir / "sessions").iterdir()
    return RunnerOutput(
        (session / "results.txt").read_text(),
        json.loads((session / "results.json").read_text()),
        proc.stdout,
    )


def _run_until(
    command: list[str], workdir: Path, env: dict, text: str, timeout_s: float
) -> RunnerOutput:
    log = workdir / "output.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                env=env)
        try:
            deadline = time.monotonic() + timeout_s
            while text not in log.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, f"no {text!r}:\n{log.read_text()[-4000:]}"
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    return RunnerOutput("", [], log.read_text())


def _yaml(data: object) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _port(device: str, usb: tuple[int, int]) -> dict:
    return {"device": device, "vid": usb[0], "pid": usb[1], "description": "simulated"}


def _dut_entry(**extra: object) -> dict:
    return {"name": "l4r5zi", "type": "dut",
            "baud": {"energy": ENERGY_BAUD, "performance": BOARD.uart_baud["performance"],
                     "accuracy": BOARD.uart_baud["accuracy"]},
            "usb": {DUT_USB[0]: DUT_USB[1]}, **extra}


@contextmanager
def performance_dut() -> Iterator[tuple[SoftwareDut, str]]:
    """A USB-powered DUT in performance mode on its pty, at its performance baud."""
    timeline = LoadTimeline(VirtualClock(), BOARD.energy_model.idle_current_a)
    with SoftwareDut(model=MODEL.data, suite=SUITE, board=BOARD, timeline=timeline,
                     mode="performance", macs=MODEL.info.macs,
                     uart_baud=BOARD.uart_baud["performance"]) as dut:
        yield dut, dut.start()


def test_performance_mode(tmp_path: Path, dataset: Path) -> None:
    _require_runner()
    n = 20
    with performance_dut() as (dut, url):
        out = run_mlcommons(
            tmp_path / "mlcommons", "p", [_dut_entry()], [_port(url, DUT_USB)],
            [{"loop 5": ["download", f"infer {n} 0"]}], dataset,
        )
    windows = [r["infer"] for r in out.results if "infer" in r]
    assert len(windows) == 5 and all(w["iterations"] == n for w in windows)
    # The DUT's laps are whole µs of its virtual clock: N / lap difference, exactly.
    for w in windows:
        assert w["elapsed_time"] == w["end_time"] - w["start_time"]
        assert w["throughput"] == pytest.approx(n / (w["elapsed_time"] / 1e6), rel=1e-12)
        assert w["elapsed_time"] / 1e6 == pytest.approx(
            n * dut.latency_s + BOARD.energy_model.timestamp_hold_s, abs=2e-6
        )
    # The runner times its whole host loop on the wall clock (>= 10 s or "error 2"); the
    # virtual DUT's windows take milliseconds of wall time, so it reports error 2, not a median.
    assert any(r.get("error") == "error 2" for r in out.results) and "ERROR 2" in out.text
    ours = run(RunRequest(
        board=BOARD, suite=SUITE, model=MODEL, dataset=load_dataset(dataset / "kws01", SUITE),
        mode="performance", runs_dir=tmp_path / "ours", iterations=n, warmups=0,
    ))
    assert ours.result is not None, ours.error
    theirs = float(np.median([w["throughput"] for w in windows]))
    assert theirs == pytest.approx(ours.result.value, rel=1e-3)


def test_accuracy_mode(tmp_path: Path, dataset: Path) -> None:
    _require_runner()
    with performance_dut() as (_, url):
        out = run_mlcommons(
            tmp_path / "mlcommons", "a", [_dut_entry()], [_port(url, DUT_USB)],
            [{"loop": ["download", "infer 1 0"]}], dataset,
        )
    reference = ReferenceModel(MODEL.data, SUITE)
    rows = list(csv.reader((dataset / "kws01" / "y_labels.csv").open()))
    per_file = {r["file"]: r for r in out.results if "file" in r}
    assert sorted(per_file) == sorted(row[0] for row in rows)
    scores = []
    for name, _, label in rows:
        data = (dataset / "kws01" / name).read_bytes()
        expected = [float(x) for x in reference.results_payload(data).split(",")]
        assert per_file[name]["infer"]["results"] == expected
        assert int(per_file[name]["class"]) == int(label)
        scores.append(int(np.argmax(np.array(expected) / sum(expected))) == int(label))
    top1 = float(re.search(r"Top 1% = ([\d.]+)", out.text).group(1))
    assert top1 == pytest.approx(round(100 * sum(scores) / len(scores), 1), abs=0.05)
    assert re.search(r"AUC = [\d.]+", out.text)


@contextmanager
def energy_bench(kind: str) -> Iterator[dict]:
    """The energy-mode bench: a DUT powered only by the LPM01A simulator's output, behind an
    IO manager simulator, each on its pty. The DUT runs its windows on the wall clock so the
    meter streams them as a real one does (the runner reads the stream as it comes)."""
    timeline = LoadTimeline(VirtualClock(), BOARD.energy_model.idle_current_a, powered=False)
    with ExitStack() as stack:
        dut = stack.enter_context(SoftwareDut(
            model=MODEL.data, suite=SUITE, board=BOARD, timeline=timeline, mode="energy",
            macs=MODEL.info.macs, uart_baud=ENERGY_BAUD, realtime=True,
        ))
        io = stack.enter_context(IoManagerSimulator(dut.start(), kind, ENERGY_BAUD))
        lpm = stack.enter_context(Lpm01aSimulator(timeline))
        yield {"dut": dut, "timeline": timeline, "io_url": io.start(), "lpm_url": lpm.start(),
               "lpm": lpm}


def _ground_truth_uj(timeline: LoadTimeline, voltage_v: float, n: int, windows: int) -> float:
    """Median over the last ``windows`` infer windows of the exact energy per inference
    between each window's two falling edges."""
    falls = [e.time_s for e in timeline.edges_between(0, math.inf) if e.polarity == "fall"]
    last = falls[-2 * windows :]
    pairs = list(zip(last[0::2], last[1::2], strict=True))
    return float(np.median(
        [voltage_v * timeline.charge_between(a, b) / n * 1e6 for a, b in pairs]
    ))


def test_energy_mode_through_the_interface_board(tmp_path: Path, dataset: Path) -> None:
    _require_runner()
    voltage = BOARD.monitor_voltage_v
    with energy_bench("mlcommons") as bench:
        n = math.ceil(ENERGY_WINDOW_S / bench["dut"].latency_s)
        assert not bench["timeline"].powered  # the LPM01A's default: off until told
        devices = [
            {"name": "stm32h573i-dk", "type": "interface", "preference": 2, "baud": 115200,
             "usb": {INTERFACE_USB[0]: INTERFACE_USB[1]}},
            {"name": "lpm01a", "type": "power", "baud": 3686400, "preference": 2,
             "voltage": voltage, "usb": {LPM01A_USB[0]: LPM01A_USB[1]}},
            _dut_entry(),
        ]
        out = run_mlcommons(
            tmp_path / "mlcommons", "e", devices,
            [_port(bench["io_url"], INTERFACE_USB), _port(bench["lpm_url"], LPM01A_USB)],
            [{"loop 5": ["download", f"infer {n} {ENERGY_WARMUPS}"]}], dataset,
        )
        truth = _ground_truth_uj(bench["timeline"], voltage, n, 5)
        assert bench["lpm"].voltage_v == pytest.approx(voltage)
    theirs = float(re.search(r"Median energy cost is\s+([\d.]+) uJ/inf", out.text).group(1))
    windows = [r for r in out.results if "power" in r]
    assert len(windows) == 5
    for w in windows:
        counters = [int(c) for c, _ in w["power"]["timestamps"]]
        assert len(counters) >= 2 and np.all(np.diff(counters) == 1)
    print(f"MLCommons runner {theirs} uJ/inf, ground truth {truth:.4f} uJ/inf")
    assert theirs == pytest.approx(truth, rel=1e-3)
    ours = run(RunRequest(
        board=BOARD, suite=SUITE, model=MODEL, dataset=load_dataset(dataset / "kws01", SUITE),
        mode="energy", runs_dir=tmp_path / "ours", iterations=n, warmups=ENERGY_WARMUPS,
        interface="mlcommons", min_window_s=1.0,
    ))
    assert ours.result is not None, ours.error
    print(f"tinypower runner {ours.result.value:.4f} uJ/inf")
    assert theirs == pytest.approx(ours.result.value, rel=1e-3)
    assert ours.result.value == pytest.approx(truth, rel=1e-3)


def test_the_runner_has_no_energy_mode_through_the_arduino(tmp_path: Path, dataset: Path) -> None:
    """The MLCommons runner cannot use EEMBC's Arduino IO manager in energy mode: main.py calls
    ``io.sync_baud()``, which only ``IOManagerEnhanced`` (the interface board) defines. Our
    runner covers the Arduino path (tests/test_dut_power.py); this records the oracle's limit,
    and fails once the runner gains it, so that the comparison can be added."""
    _require_runner()
    with energy_bench("arduino") as bench:
        devices = [
            {"name": "arduino", "type": "interface", "preference": 1, "baud": 115200,
             "usb": {0x2341: [0x0043, 0x0001]}},
            {"name": "lpm01a", "type": "power", "baud": 3686400, "preference": 2,
             "voltage": BOARD.monitor_voltage_v, "usb": {LPM01A_USB[0]: LPM01A_USB[1]}},
            _dut_entry(),
        ]
        out = run_mlcommons(
            tmp_path / "mlcommons", "e", devices,
            [_port(bench["io_url"], (0x2341, 0x0043)), _port(bench["lpm_url"], LPM01A_USB)],
            [{"loop 5": ["download", "infer 20 1"]}], dataset, timeout_s=60,
            fails_with="'IOManager' object has no attribute 'sync_baud'",
        )
    assert "io.sync_baud(desired_dut_baud)" in out.log  # main.py, in the traceback
