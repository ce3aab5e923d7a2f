"""What no real measurement can be is a named failed rule, never a traceback or a valid number:
non-finite, negative or zero energy, zero elapsed time, identical laps, non-finite DUT outputs,
fewer than 10 inferences. Typed checks survive JSON, and a failed session records the hashes of
the files it actually wrote."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_measure import request

from energy_monitor.sim.faults import SimFaults
from energy_monitor.trace import Window, WindowEnergy
from tinypower.results.strict_json import dumps_strict, jsonable
from tinypower.rules.tiny import (
    PerfWindow,
    finite_outputs_check,
    score_energy,
    score_performance,
)
from tinypower.runner import run


def energy_windows(energies_j: list[float], n: int = 100, duration_s: float = 10.0):
    return [
        WindowEnergy(Window(0.0, duration_s, n, "meter", 1e-3, 0, 10_000, str(k)), e, 10_000,
                     duration_s)
        for k, e in enumerate(energies_j)
    ]


@pytest.mark.parametrize("bad, rule", [
    (float("nan"), "tiny.energy_finite[2]"),
    (float("inf"), "tiny.energy_finite[2]"),
    (-1.05e-3, "tiny.energy_positive[2]"),
    (0.0, "tiny.energy_positive[2]"),
])
def test_impossible_energy_fails_a_named_rule(bad: float, rule: str) -> None:
    result = score_energy(energy_windows([0.1, 0.1, bad, 0.1, 0.1]))
    assert not result.valid
    assert rule in {c.rule for c in result.failures}
    assert math.isnan(result.value)  # no score is made from an impossible window
    assert math.isnan(result.extras["mean_power_uw"])


def test_zero_elapsed_energy_window_fails_instead_of_dividing() -> None:
    result = score_energy(energy_windows([0.1] * 5, duration_s=0.0))
    assert {f"tiny.elapsed_positive[{k}]" for k in range(5)} <= {c.rule for c in result.failures}


def test_identical_laps_fail_a_named_rule_not_a_traceback() -> None:
    windows = [PerfWindow(100, 5_000, 5_000)] + [PerfWindow(100, 0, 10_000_000)] * 4
    result = score_performance(windows)
    assert "tiny.elapsed_positive[0]" in {c.rule for c in result.failures}
    assert math.isnan(result.value) and math.isnan(result.extras["latency_ms"])


def test_fewer_than_ten_inferences_per_window_is_invalid() -> None:
    windows = [PerfWindow(9, 0, 12_000_000)] * 5
    result = score_performance(windows)
    assert {f"tiny.inferences[{k}]" for k in range(5)} <= {c.rule for c in result.failures}
    energy = score_energy(energy_windows([0.1] * 5, n=5))
    assert "tiny.inferences[0]" in {c.rule for c in energy.failures}


def test_non_finite_dut_outputs_fail() -> None:
    assert finite_outputs_check([[0.1, 0.9], [0.5, 0.5]]).passed
    check = finite_outputs_check([[0.1, 0.9], [float("nan"), 0.5], [float("inf"), 0.0]])
    assert not check.passed and check.severity == "fail"
    assert check.message.startswith("2 of 3 DUT output(s)")


def test_iterations_below_ten_make_the_run_invalid(tmp_path: Path, capsys) -> None:
    from tinypower.cli import main

    code = main(["measure", "--runs-dir", str(tmp_path), "--mode", "performance",
                 "--iterations", "5", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and not record["valid"]
    assert "tiny.inferences[0]" in {f["rule"] for f in record["failures"]}


def test_strict_json_keeps_types_and_refuses_nan_and_unknowns() -> None:
    data = {"ok": np.bool_(False), "n": np.int64(3), "x": np.float32(0.5),
            "nan": float("nan"), "inf": np.float64("inf"), "t": (1, 2), "p": Path("/a")}
    assert jsonable(data) == {"ok": False, "n": 3, "x": 0.5, "nan": None, "inf": None,
                              "t": [1, 2], "p": "/a"}
    assert json.loads(dumps_strict(data))["ok"] is False
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        dumps_strict({"x": object()})


def test_a_failed_session_records_the_hashes_of_what_it_wrote(tmp_path: Path) -> None:
    outcome = run(request(tmp_path, "energy", meter_faults=SimFaults(stall_after=5000)))
    assert outcome.error and "stopped streaming" in outcome.error
    folder = outcome.session.folder
    files = json.loads((folder / "session.json").read_text())["files"]
    assert "lpm01a-raw.txt" in files
    for name, digest in files.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
