"""Measuring a hardware board: the runner and `tinypower measure --board nucleo-l4r5zi` reach a
bench by its ports, exactly as they would a real one.

The bench here is made of simulators on real ptys: the software DUT behind a simulated
MLCommons interface board, and a simulated LPM01A, sharing one virtual clock. The runner knows
none of that: it gets the board file of the real reference board and three port paths. The
result is labelled by the board's kind ("hardware"), which is why these simulators never run
behind the user-facing command without --port: only a test wires them up this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator
from tinypower.boards import load_board
from tinypower.cli import main
from tinypower.dut.hardware_bench import BenchPorts
from tinypower.dut.virtual_lab import VirtualLab
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

BOARD = "nucleo-l4r5zi"


@dataclass
class SimulatedBench:
    ports: BenchPorts
    lab: VirtualLab
    active_power_w: float  # the simulated DUT's supply power while inferring
    latency_s: float  # its time per inference


@pytest.fixture
def bench() -> Iterator[SimulatedBench]:
    suite = get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    sim_board = load_board("sim-m4")
    with VirtualLab(board=sim_board, suite=suite, model=model.data, macs=model.info.macs,
                    mode="energy", interface="mlcommons") as lab:
        meter = Lpm01aSimulator(lab.timeline)
        meter_port = meter.start()
        try:
            board = load_board(BOARD)
            yield SimulatedBench(
                BenchPorts(dut=lab.dut_url, monitor=meter_port, interface=lab.io_manager_url),
                lab,
                board.monitor_voltage_v * sim_board.energy_model.active_current_a,
                sim_board.cycle_model.latency_s(model.info.macs, sim_board.clock_hz, model.data),
            )
        finally:
            meter.close()


def hardware_request(tmp_path: Path, ports: BenchPorts | None, **kw) -> RunRequest:
    suite = get_suite("kws01")
    return RunRequest(board=load_board(BOARD), suite=suite,
                      model=resolve_model(suite, "synthetic"), dataset=synthetic_inputs(suite),
                      mode="energy", runs_dir=tmp_path, ports=ports, **kw)


def test_energy_through_the_io_manager_and_lpm01a_matches_the_bench(tmp_path, bench) -> None:
    outcome = run(hardware_request(tmp_path, bench.ports, interface="mlcommons"))
    assert outcome.error is None and outcome.ok, outcome.result.failures
    assert outcome.measured_as == "simulated"  # a bench of simulators
    n = outcome.result.extras["iterations"]
    hold_s = load_board("sim-m4").energy_model.timestamp_hold_s
    truth_uj = bench.active_power_w * (n * bench.latency_s + hold_s) * 1e6
    for w in outcome.result.windows:
        assert w["energy_uj"] == pytest.approx(truth_uj, rel=1e-3)
    session = json.loads((outcome.session.folder / "session.json").read_text())
    assert session["interface"]["kind"] == "mlcommons"
    assert session["interface"]["dut_baud"] == 9600  # the board file's energy-mode baud
    assert session["meter"]["kind"] == "lpm01a"


def test_measure_command_takes_the_bench_ports(tmp_path, bench, capsys) -> None:
    code = main(["measure", "--board", BOARD, "--mode", "energy", "--json",
                 "--runs-dir", str(tmp_path), "--interface", "mlcommons",
                 "--port", bench.ports.dut, "--monitor-port", bench.ports.monitor,
                 "--interface-port", bench.ports.interface])
    record = json.loads(capsys.readouterr().out)
    assert code == 0, record["error"]
    assert record["valid"] and record["measured_as"] == "simulated"
    assert record["unit"] == "uJ/inf"


def test_energy_mode_without_the_io_manager_says_what_to_pass(tmp_path) -> None:
    outcome = run(hardware_request(tmp_path, BenchPorts(dut="/dev/ttyACM0")))
    # Refused before anything is opened; the session says why.
    assert outcome.result is None
    assert "pass --interface" in outcome.error and "--interface-port" in outcome.error


def test_missing_ports_are_named_with_the_option_to_pass(tmp_path) -> None:
    energy = run(hardware_request(tmp_path, None, interface="arduino"))
    assert "--interface-port" in energy.error and "tinypower doctor" in energy.error
    performance = run(replace(hardware_request(tmp_path, None), mode="performance"))
    assert "pass --port" in performance.error
    assert performance.result is None


def test_a_monitor_other_than_the_board_files_is_refused(tmp_path, bench) -> None:
    outcome = run(hardware_request(tmp_path, bench.ports, interface="mlcommons",
                                   monitor="ppk2"))
    assert "set [monitor] kind" in outcome.error
    assert json.loads((outcome.session.folder / "session.json").read_text())["status"] != \
        "complete"
