"""The virtual lab's latency comes from our firmware's measured costs: for kws01 it is within
10 % of the firmware's own latency under QEMU, measured here side by side (the emulated board
through the real runner), so it follows the firmware as it changes once the costs file is
regenerated (benchmarks/bench_latency_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinypower.boards import load_board
from tinypower.dut.latency_model import (
    COSTS_FILE,
    FirmwareCosts,
    LatencyModelError,
    describe,
    fit_costs,
)
from tinypower.dut.virtual_lab import VirtualLab
from tinypower.emulator import emulator_config
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import Dataset, Sample

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"


def _ops(conv: int, positions: int, dw: int, fc: int) -> dict[str, int]:
    return {"CONV_2D": conv, "CONV_2D#positions": positions, "DEPTHWISE_CONV_2D": dw,
            "FULLY_CONNECTED": fc, "RESHAPE#ops": 1}


def test_fit_recovers_known_costs_and_never_goes_negative() -> None:
    truth = FirmwareCosts({"CONV_2D": 7.0, "CONV_2D#positions": 20.0,
                           "DEPTHWISE_CONV_2D": 50.0, "FULLY_CONNECTED": 7.5})
    models = {name: _ops(*shape) for name, shape in {
        "a": (2_368_000, 352_000, 288_000, 768), "b": (6_690_816, 290_304, 798_336, 512),
        "c": (12_500_992, 675_840, 0, 640), "d": (0, 0, 0, 264_192)}.items()}
    measured = {k: {"instructions": truth.instructions(v), "ops": v} for k, v in models.items()}
    assert fit_costs(measured).costs == pytest.approx(truth.costs)
    cheaper = FirmwareCosts({**truth.costs, "CONV_2D#positions": -5.0})  # a plain fit: -5
    measured = {k: {"instructions": cheaper.instructions(v), "ops": v} for k, v in models.items()}
    fitted = fit_costs(measured).costs
    assert min(fitted.values()) >= 0 and fitted["CONV_2D#positions"] == 0
    for v in measured.values():
        v["instructions"] = 0.0  # nothing to fit
    with pytest.raises(LatencyModelError, match="non-negative"):
        fit_costs(measured)


def test_the_shipped_costs_say_where_they_come_from() -> None:
    document = json.loads(COSTS_FILE.read_text())
    assert document["generated_by"] == "benchmarks/bench_latency_model.py"
    assert set(document["measured"]) == {"kws01", "vww01", "ic01", "ad01"}
    assert "per-operator instruction costs under QEMU" in describe()
    model = FirmwareCosts.from_record(document["costs"])
    for name, m in document["measured"].items():  # the fit reproduces what it was fitted to
        assert model.instructions(m["ops"]) == pytest.approx(m["instructions"], rel=0.10), name


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no MLPerf Tiny models at {SHARED}")
def test_kws01_virtual_lab_latency_is_the_firmwares_work_under_qemu_within_10_percent(
        tools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "cache"))
    suite = get_suite("kws01")
    model = resolve_model(suite, str(SHARED / suite.reference_model))
    data = suite.windows_of((SHARED / "samples" / "kws01_sample0.bin").read_bytes())[0]
    board = load_board("qemu-an386")
    outcome = run(RunRequest(board=board, suite=suite, model=model,
                             dataset=Dataset("files", [Sample("kws01.bin", data, None)], 1),
                             mode="performance", runs_dir=tmp_path / "runs", iterations=3,
                             warmups=0))
    assert outcome.error is None and outcome.measured_as == "emulated"
    qemu_s = outcome.result.extras["latency_ms"] / 1e3
    instructions = qemu_s * 1e9 / 2 ** emulator_config(board).icount_shift
    sim_board = load_board("sim-m4")
    with VirtualLab(board=sim_board, suite=suite, model=model.data,
                    macs=model.info.macs, mode="performance") as lab:
        virtual_s = lab.dut.latency_s
    # The same firmware on two clocks: QEMU runs one instruction per 2^shift ns (125 MHz at
    # shift 3), sim-m4 is a 120 MHz core at one instruction per cycle. The like-for-like
    # comparison is the work of one inference, in instructions (= cycles on sim-m4).
    virtual_instructions = virtual_s * sim_board.clock_hz
    print(f"\nkws01: firmware under QEMU {qemu_s * 1e3:.3f} ms ({instructions:,.0f} "
          f"instructions), virtual lab {virtual_s * 1e3:.3f} ms at "
          f"{sim_board.clock_hz / 1e6:g} MHz ({virtual_instructions:,.0f} cycles), ratio "
          f"{virtual_instructions / instructions:.3f}")
    assert virtual_instructions == pytest.approx(instructions, rel=0.10)
