"""One short power session of the scaling layer, for the result and report tests: `tinypower
measure --sut FILE --quick`, the command a user types, with the real director, client and
LoadGen on loopback against the PTDaemon simulator. The simulator's power is a fixed function of
time (100 W and a slow 1 W swing), not this machine's CPU load, so ranging and testing agree
within the 5% rule however busy the machine is."""

from __future__ import annotations

import math
from pathlib import Path

from energy_monitor.sim.ptd_sim import PtdSimulator
from tinypower.cli import main
from tinypower.models import resolve_model
from tinypower.suites.benchmarks import get_suite

SAMPLE_PERIOD_S = 0.25


def load_w(t: float) -> float:
    return 100.0 + math.sin(2 * math.pi * t / 7.0)


def quick_director_session(tmp: Path, name: str = "edge-box", extra_toml: str = "",
                           expect_code: int = 0) -> Path:
    """Measure once; return the director's session folder (under ``tmp/runs/power``).

    The SUT file does not say how the meter measures: the PTDaemon simulator's identity
    must make the session ``simulated`` by itself. ``extra_toml`` is appended to the file."""
    model = resolve_model(get_suite("kws01"), None)
    model_path = model.path
    if model_path is None:  # the built-in model: LoadGen's child process needs a file
        model_path = tmp / "kws01.tflite"
        model_path.write_bytes(model.data)
    with PtdSimulator(load_w, sample_period_s=SAMPLE_PERIOD_S) as simulator:
        sut = tmp / "sut.toml"
        sut.write_text(
            f'name = "{name}"\n[workload]\nmodel = "{model_path}"\nscenario = "SingleStream"\n'
            f'[[meters]]\nkind = "ptd"\nname = "ptd"\naddress = "{simulator.address}"\n'
            'timeout_s = 5.0\n'
            f'[director]\noutput = "{tmp / "runs" / "power"}"\n' + extra_toml)
        code = main(["measure", "--sut", str(sut), "--quick", "--runs-dir", str(tmp / "runs")])
    assert code == expect_code, f"the quick director session exited {code} (see its output)"
    [folder] = [p for p in (tmp / "runs" / "power").iterdir() if p.is_dir()]
    return folder
