"""Board + monitor + suite + mode -> a session.

The runner drives the DUT through the MLPerf Tiny protocol client and the energy monitor
through its driver, whether they are the virtual lab's simulators or hardware: it never
integrates or scores by itself, but hands windows to the timing core and results to the rules.

Per timed mode it calibrates N so each window lasts at least 10 s of DUT time (a probe
``infer``, timed by the DUT's laps in performance mode and by the meter's edges in energy
mode), then measures five windows, one input each. Whatever happens, the session folder keeps
what was measured and says how the run ended.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from energy_monitor.meter import Meter, MeterError, is_ours, weakest
from energy_monitor.sim.faults import SimFaults
from energy_monitor.store import DTYPES as COLUMN_DTYPES
from energy_monitor.trace import (
    Event,
    Trace,
    TraceError,
    WindowEnergy,
    integrate,
    save_trace,
    window_from_events,
)
from energy_monitor.uncertainty import COVERAGE_K, energy_budget
from tinypower.boards import Board
from tinypower.dut.hardware_bench import BenchError, BenchPorts, HardwareBench
from tinypower.dut.io_manager import DEFAULT_DUT_BAUD, KINDS, IoManagerClient
from tinypower.dut.latency_model import describe as describe_latency_model
from tinypower.dut.protocol import DutClient, DutError
from tinypower.dut.transcript import Transcript
from tinypower.dut.virtual_lab import VirtualLab
from tinypower.emulator import EmulatorError
from tinypower.firmware import FirmwareBuildError
from tinypower.models import ResolvedModel
from tinypower.report.plot import plot_trace
from tinypower.results.db import DEFAULT_DB, StoreError, add_session
from tinypower.results.mlperf_text import results_text
from tinypower.results.record import RecordError
from tinypower.results.session import (
    Session,
    SessionError,
    disk_error,
    interrupted_by,
    signals_held,
)
from tinypower.rules.tiny import (
    ACCURACY_TARGETS,
    MIN_WINDOW_S,
    REQUIRED_WINDOWS,
    Check,
    PerfWindow,
    TinyResult,
    binary_auc,
    finite_outputs_check,
    score_energy,
    score_performance,
    top1_percent,
)
from tinypower.suites.benchmarks import Suite, SuiteError
from tinypower.suites.datasets import Dataset, DatasetError
from tinypower.suites.reference import ReferenceModel

if TYPE_CHECKING:  # imported where an emulated board is run: it pulls in the firmware builder
    from tinypower.dut.emulated_lab import EmulatedLab

MODES = ("performance", "energy", "accuracy")
CALIBRATION_MARGIN = 1.15  # N gives windows 15% above the minimum, so jitter cannot fail them
PROBE_MIN_S = 1.0  # a calibration probe must last this long to time one inference well

Progress = Callable[[str, int, int], None]  # (phase description, done, total)


class RunError(RuntimeError):
    """The run could not go on; the message says why and what to do."""


@dataclass
class RunRequest:
    board: Board
    suite: Suite
    model: ResolvedModel
    dataset: Dataset
    mode: str
    runs_dir: Path
    iterations: int | None = None  # fixed N instead of calibration
    warmups: int | None = None
    min_window_s: float = MIN_WINDOW_S
    edge_timeout_s: float = 5.0  # wait for a window's edges after the DUT says it is done
    monitor: str | None = None  # energy monitor kind; default the board's
    # IO manager between host and DUT in energy mode: "arduino", "mlcommons" or None (direct).
    interface: str | None = None
    # Where a hardware board's UART, energy monitor and IO manager are (from the command line
    # or discovery); unused by the virtual lab and the emulated board.
    ports: BenchPorts | None = None
    # The DUT runs tinypower's firmware (firmware/harness), which switches between energy and
    # performance timestamps with its `mode` command; the emulated board always does.
    tinypower_firmware: bool = False
    # `db print` read-back of every input: True, False, or None (only where it is cheap:
    # DutClient.verify_by_default). The session records what was done.
    verify_inputs: bool | None = None
    # The labgrid place ``ports`` come from (tinypower.farm.place's record: coordinator, place,
    # exporter per resource): the run measures through them, whatever the board's kind.
    farm: dict | None = None
    # Faults for tests of the virtual lab's failure paths.
    meter_faults: SimFaults | None = None
    corrupt_download_byte: int | None = None


@dataclass
class RunOutcome:
    session: Session
    measured_as: str
    result: TinyResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None and self.result.valid

    def record(self, request: RunRequest) -> dict:
        """The result record printed by ``--json`` and written to ``results.json``."""
        r = self.result
        return {
            "suite": request.suite.name,
            "mode": request.mode,
            "metric": r.metric if r else None,
            "value": r.value if r else None,
            "unit": r.unit if r else None,
            "valid": bool(r and r.valid and not self.error),
            "error": self.error,
            "failures": [c.__dict__ for c in r.failures] if r else [],
            "warnings": [c.__dict__ for c in r.warnings] if r else [],
            "measured_as": self.measured_as,
            "meter": self.session.data.get("meter"),
            "board": request.board.name,
            "model": {
                "name": request.model.name,
                "source": request.model.source,
                "sha256": request.model.sha256,
                "macs": request.model.info.macs,
            },
            "dataset": request.dataset.source,
            "notes": self.notes,
            "extras": r.extras if r else {},
            "session": str(self.session.folder),
        }


def run(request: RunRequest, progress: Progress | None = None) -> RunOutcome:
    """Measure one mode; never raises for a measurement failure (the outcome says it)."""
    if request.mode not in MODES:
        raise RunError(f"unknown mode {request.mode!r}; choose from {', '.join(MODES)}")
    if request.interface not in (None, *KINDS):
        raise RunError(
            f"unknown interface {request.interface!r}; choose from {', '.join(KINDS)}"
        )
    progress = progress or (lambda *_: None)
    session = Session(
        request.runs_dir, request.board.name, request.suite.name, request.mode,
        need_bytes=expected_bytes(request),
        config={
            "board_file": str(request.board.path),
            "model": request.model.name,
            "model_source": request.model.source,
            "dataset": str(request.dataset.path) if request.dataset.path else "synthetic",
            "iterations": request.iterations,
            "warmups": request.warmups,
            "min_window_s": request.min_window_s,
            "interface": request.interface,
        },
    )
    session.add_artifact(f"model:{request.model.name}", request.model.data)
    for s in request.dataset.samples:
        session.add_artifact(f"input:{s.name}", s.data)
    outcome = RunOutcome(session, request.board.measured_as)
    if request.model.note:
        outcome.notes.append(request.model.note)
    if request.dataset.source == "synthetic":
        outcome.notes.append("synthetic inputs: seeded random tensors of the suite's input size")
    interface = request.interface if request.mode == "energy" else None
    if request.interface and not interface:
        outcome.notes.append(
            f"the {request.interface} IO manager is in the energy-mode path only: "
            f"{request.mode} mode talks to the DUT directly"
        )
    session.set("measured_as", outcome.measured_as)
    if models := _models(request.board):
        session.set("models", models)
        outcome.notes.append(f"{models['label']}: timing from {models['timing']}; power "
                             f"profile from {models['power_profile']}")
    if request.farm:
        session.set("farm", request.farm)
    lab: VirtualLab | EmulatedLab | HardwareBench | None = None
    with ExitStack() as stack:
        stack.push(lambda *exc: _closing_write_failed(outcome, exc[1]))  # runs last
        transcript = stack.enter_context(Transcript(session.path("transcript.log")))
        try:
            lab = stack.enter_context(_lab(request, interface))
            if request.board.kind == "emulated":
                session.set("emulator", _emulator_record(lab))
            meter: Meter | None = None
            if request.mode == "energy":
                # As on a bench: the monitor powers the DUT and starts acquiring before the
                # host talks to it, so nothing power-cycles the DUT after sync.
                kind = lab.monitor
                meter = lab.connect_meter(
                    measured_as=outcome.measured_as,
                    on_command=lambda d, text: transcript.record(d, f"[{kind}] {text}"),
                )
                stack.callback(meter.close)
                _power_up(meter, lab, request, outcome)
            try:
                if interface:
                    dut = stack.enter_context(
                        IoManagerClient(lab.io_manager_url, interface, transcript=transcript)
                    )
                    _open_interface(dut, request, session)
                else:
                    dut = stack.enter_context(
                        DutClient(lab.dut_url, request.board.uart_baud.get(request.mode, 115200),
                                  transcript)
                    )
                stack.callback(_record_verification, dut, request, session)
                if is_ours(_open_dut(dut, request, session)):  # the software DUT
                    _observed(outcome, "simulated")
                if request.board.kind == "emulated" or request.tinypower_firmware:
                    _select_firmware_mode(dut, request)
            except BaseException:
                if meter is not None:
                    _save_partial_trace(meter, session)
                raise
            if meter is not None:
                outcome.result = _measure_energy(dut, meter, request, session, progress)
            elif request.mode == "performance":
                outcome.result = _measure_performance(dut, request, session, progress)
            else:
                outcome.result = _measure_accuracy(dut, request, outcome, progress)
            if why := lab.failure():
                raise RunError(why)
        except (DutError, MeterError, TraceError, RunError, DatasetError, SuiteError,
                FirmwareBuildError, EmulatorError, BenchError, SessionError) as exc:
            why = lab.failure() if lab is not None else None
            outcome.error = str(exc) if not why or why in str(exc) else f"{exc} ({why})"
        except OSError as exc:  # a write of the session's files failed (a full disk)
            outcome.error = str(disk_error(exc, exc.filename or session.folder))
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (see session.Interrupted)
            outcome.error = f"interrupted by {interrupted_by(exc)}"
            with signals_held():  # a second Ctrl-C must not cut the session's last words
                stack.close()  # meters stopped, DUT and lab closed, partial trace saved
                _finish(outcome, request, "interrupted")
            exc.session_folder = session.folder  # type: ignore[attr-defined]
            raise
    _finish(outcome, request)
    return outcome


def _models(board: Board) -> dict[str, str] | None:
    """What a virtual or emulated board's numbers are modelled from, said in the results:
    its timing (the software DUT's firmware costs, or the firmware under QEMU) and its power
    profile with the published run it comes from."""
    if board.kind == "hardware" or board.energy_model is None:
        return None
    profile = board.energy_model.source or "assumed currents (no source given in the board file)"
    if board.kind == "emulated":
        return {"label": "emulated timing, modelled power",
                "timing": "the benchmark firmware under QEMU (instruction count)",
                "power_profile": profile}
    timing = (describe_latency_model() if board.cycle_model is not None
              and board.cycle_model.costs == "firmware" else "a constant cost per MAC")
    return {"label": "simulated timing, modelled power", "timing": timing,
            "power_profile": profile}


def _observed(outcome: RunOutcome, label: str) -> None:
    """Lower the outcome's label to what a device showed itself to be: a board file can say
    ``hardware``, but a DUT or meter that identifies as one of our simulators makes every
    number of the run ``simulated``."""
    outcome.measured_as = weakest(outcome.measured_as, label)
    outcome.session.set("measured_as", outcome.measured_as)


def _closing_write_failed(outcome: RunOutcome, exc: BaseException | None) -> bool:
    """A session write that failed while the lab and meters closed (a full disk) becomes the
    outcome's error, like one while measuring, instead of escaping :func:`run`."""
    if not isinstance(exc, SessionError):
        return False
    outcome.error = f"{outcome.error}; {exc}" if outcome.error else str(exc)
    return True


def expected_bytes(request: RunRequest) -> int:
    """What a run writes, at most, so the free space is checked before it starts: the raw
    stream and float64 samples of six windows (calibration and five) of an energy run at
    the board's sample rate, plus transcript and results."""
    base = 8 * 1024 * 1024
    if request.mode != "energy":
        return base
    seconds = 6 * request.min_window_s * CALIBRATION_MARGIN + 60
    return base + int(seconds * request.board.monitor_sample_rate_hz * 2 * 8)


def _dut_mode(mode: str) -> str:
    return "energy" if mode == "energy" else "performance"


def _lab(
    request: RunRequest, interface: str | None
) -> VirtualLab | EmulatedLab | HardwareBench:
    """The software DUT (virtual board), the firmware under QEMU (emulated board) or the
    user's bench (hardware board)."""
    if request.board.kind == "hardware" or request.farm:
        if interface is None and request.mode == "energy" and request.board.needs_io_manager:
            raise RunError(
                f"energy mode on {request.board.name} reaches its UART through an IO manager "
                "(the DUT is isolated and powered by the monitor): pass --interface "
                f"{' or '.join(KINDS)} and its --interface-port"
            )
        return HardwareBench(board=request.board, mode=request.mode,
                             ports=request.ports or BenchPorts(), monitor=request.monitor,
                             interface=interface)
    if request.board.kind == "emulated":
        from tinypower.dut.emulated_lab import EmulatedLab

        if interface:
            raise RunError(
                f"the emulated board {request.board.name} talks to its firmware directly: "
                "drop the IO manager (--interface)"
            )
        return EmulatedLab(
            board=request.board, suite=request.suite, model=request.model.data,
            monitor=request.monitor, meter_faults=request.meter_faults,
        )
    return VirtualLab(
        board=request.board, suite=request.suite, model=request.model.data,
        macs=request.model.info.macs, mode=_dut_mode(request.mode),
        monitor=request.monitor, meter_faults=request.meter_faults,
        corrupt_download_byte=request.corrupt_download_byte, interface=interface,
    )


def _emulator_record(lab: EmulatedLab) -> dict:
    assert lab.firmware is not None and lab.emulator is not None
    return {
        "firmware": str(lab.firmware.elf), "firmware_sha256": lab.firmware.sha256,
        "firmware_cached": lab.firmware.cached, "command": lab.emulator.command(),
        "icount_shift": lab.config.icount_shift, "timer_hz": lab.config.timer_hz,
    }


def _select_firmware_mode(dut: DutClient, request: RunRequest) -> None:
    """One firmware serves every mode: switch its timestamps (``mode energy|performance``)."""
    mode = _dut_mode(request.mode)
    if f"m-mode-[{mode}]" not in dut.command(f"mode {mode}"):
        raise RunError(
            f"the firmware did not switch to {mode} mode: rebuild it from firmware/harness "
            "(the `mode` command is tinypower's extension)"
        )


def _open_interface(io: IoManagerClient, request: RunRequest, session: Session) -> None:
    """Reach the IO manager and give it the DUT's energy-mode baud (flash only if it differs)."""
    board_name = io.sync_board()
    changed = io.ensure_baud(request.board.uart_baud.get("energy", DEFAULT_DUT_BAUD))
    session.set("interface", {
        "kind": io.kind, "name": board_name, "dut_baud": io.line_baud, "baud_changed": changed,
    })


def _open_dut(dut: DutClient, request: RunRequest, session: Session) -> str:
    """Sync with the DUT and check its model; returns the name it reported."""
    dut.sync()
    name = dut.name()
    profile, model_id = dut.profile()
    session.set("dut", {"name": name, "profile": profile, "model": model_id})
    if model_id != request.suite.name:
        raise RunError(
            f"the DUT runs {model_id!r} but the suite is {request.suite.name!r}: flash the "
            f"{request.suite.name} firmware or pick --suite {model_id}"
        )
    return name


def _record_verification(dut: DutClient, request: RunRequest, session: Session) -> None:
    """Whether the inputs the DUT ran on were read back and found equal (``db print``)."""
    session.set("input_verification", {
        "policy": {None: "auto", True: "always", False: "never"}[request.verify_inputs],
        "verified": dut.loads_verified,
        "unverified": dut.loads_unverified,
    })


def _inputs(request: RunRequest) -> list[bytes]:
    """The five inputs of the timed modes: window 0 of the first five files, cycled if fewer."""
    firsts = [request.suite.windows_of(s.data)[0] for s in request.dataset.samples[:5]]
    return [firsts[k % len(firsts)] for k in range(REQUIRED_WINDOWS)]


def _warmups(request: RunRequest) -> int:
    return request.suite.default_infer_warmups if request.warmups is None else request.warmups


def _infer_timeout(n: int, per_inference_s: float | None) -> float | None:
    return None if per_inference_s is None else max(60.0, 3 * n * per_inference_s)


def _calibrate(
    probe: Callable[[int], float], request: RunRequest, session: Session
) -> tuple[int, float | None]:
    """N so that one window lasts ``min_window_s`` of DUT time with a margin, and the DUT
    time of one inference (``None`` when N was given and no probe ran).

    ``probe(n)`` runs ``infer n 0`` and returns its DUT duration; n grows tenfold until the
    probe lasts long enough to time one inference well.
    """
    if request.iterations:
        return request.iterations, None
    n = 10
    while True:
        duration = probe(n)
        if duration >= PROBE_MIN_S or n >= 1_000_000:
            break
        n *= 10
    per_inference = duration / n
    calibrated = max(10, math.ceil(request.min_window_s * CALIBRATION_MARGIN / per_inference))
    session.set("calibration", {"probe_n": n, "probe_s": duration, "n": calibrated})
    return calibrated, per_inference


def _measure_performance(
    dut: DutClient, request: RunRequest, session: Session, progress: Progress
) -> TinyResult:
    inputs = _inputs(request)
    warmups = _warmups(request)
    per_inference: list[float | None] = [None]

    def timed_infer(n: int, w: int) -> PerfWindow:
        reply = dut.infer(n, w, timeout_s=_infer_timeout(n, per_inference[0]))
        if len(reply.laps_us) < 2:
            raise RunError(
                f"`infer {n} {w}` printed {len(reply.laps_us)} m-lap-us line(s), needs 2: is the "
                "firmware built in performance mode?"
            )
        window = PerfWindow(n, reply.laps_us[-2], reply.laps_us[-1])
        if window.elapsed_s <= 0:
            raise RunError(f"`infer {n} {w}` gave two equal m-lap-us laps "
                           f"({window.end_us} us): the DUT's timer is not running")
        per_inference[0] = window.elapsed_s / n
        return window

    progress("calibrating N", 0, 1)
    if not request.iterations:  # the probe needs an input; a given N needs no probe
        dut.load(inputs[0], verify=request.verify_inputs)
    n, _ = _calibrate(lambda k: timed_infer(k, 0).elapsed_s, request, session)
    windows = []
    for k, data in enumerate(inputs):
        progress(f"performance window {k + 1}/{REQUIRED_WINDOWS} (N={n})", k, REQUIRED_WINDOWS)
        dut.load(data, verify=request.verify_inputs)
        windows.append(timed_infer(n, warmups))
        # Both laps and N: enough for `tinypower recover` to score a run killed after this.
        session.checkpoint(f"window {k}", dut_lap_us=windows[-1].end_us,
                           dut_start_lap_us=windows[-1].start_us, inferences=n)
    progress("performance windows done", REQUIRED_WINDOWS, REQUIRED_WINDOWS)
    result = score_performance(windows)
    result.extras["iterations"] = n
    return result


def _power_up(
    meter: Meter, lab: VirtualLab | EmulatedLab | HardwareBench, request: RunRequest,
    outcome: RunOutcome,
) -> None:
    """Identify and configure the monitor (which switches the DUT's supply on), start the
    acquisition, then give the DUT the time to boot, as the MLCommons runner's ``main.py``
    does (``power.power_on()``, ``time.sleep(1)``, ``power.start()``)."""
    session = outcome.session
    identity = meter.identify()
    session.set("meter", identity.__dict__)
    _observed(outcome, identity.measured_as)  # a simulator's mark makes the run simulated
    sample_rate_hz = (
        request.board.monitor_sample_rate_hz
        if lab.monitor == request.board.monitor_kind
        else lab.meter_sample_rate_hz
    )
    meter.configure(voltage_v=request.board.monitor_voltage_v, sample_rate_hz=sample_rate_hz)
    meter.start(session.folder)
    session.checkpoint("meter started")
    time.sleep(lab.boot_s)


def _measure_energy(
    dut: DutClient, meter: Meter, request: RunRequest, session: Session, progress: Progress,
) -> TinyResult:
    inputs = _inputs(request)
    warmups = _warmups(request)
    try:
        progress("calibrating N", 0, 1)
        if not request.iterations:  # the probe needs an input; a given N needs no probe
            dut.load(inputs[0], verify=request.verify_inputs)
        n, per_inference = _calibrate(
            lambda k: _probe_duration(dut, meter, k, request),
            request, session,
        )
        starts: list[int] = []  # where each window's edges begin in the meter's events
        for k, data in enumerate(inputs):
            progress(f"energy window {k + 1}/{REQUIRED_WINDOWS} (N={n})", k, REQUIRED_WINDOWS)
            dut.load(data, verify=request.verify_inputs)
            starts.append(_infer_edges(dut, meter, n, warmups, per_inference, request))
            session.checkpoint(f"window {k}", meter_samples=meter.sample_count(),
                               **_window_so_far(meter, starts[-1], n, k))
        progress("energy windows done", REQUIRED_WINDOWS, REQUIRED_WINDOWS)
    except BaseException:
        _save_partial_trace(meter, session)
        # Stop closes the raw and sample files, so the hashes the session records on finishing
        # are those of what was written, not of a half-flushed file.
        with contextlib.suppress(MeterError):
            meter.stop()
        raise
    try:
        trace = meter.stop()
    except MeterError:
        _save_partial_trace(meter, session)
        raise
    _save_trace_in_place_of_columns(trace, session)
    events = meter.events()
    groups = [events[a:b] for a, b in zip(starts, [*starts[1:], len(events)], strict=True)]
    return _score_energy_windows(trace, groups, n, request, session)


def _window_so_far(meter: Meter, first_event: int, n: int, k: int) -> dict:
    """Window ``k``'s energy from the samples and edges the meter has given so far, for its
    checkpoint: what ``tinypower recover`` scores an energy run from when its process dies
    after the last window (the run itself scores the whole trace again when it ends)."""
    trace = meter.trace()
    try:
        w = integrate(trace, window_from_events(meter.events()[first_event:], trace, n, str(k)))
    except TraceError as exc:
        return {"window_error": str(exc)}
    return {"window": {"inferences": n, "start_s": w.window.start_s, "end_s": w.window.end_s,
                       "samples": w.samples, "energy_j": w.energy_j,
                       "alignment_bound_s": w.window.alignment_bound_s}}


def _infer_edges(
    dut: DutClient, meter: Meter, n: int, warmups: int, per_inference: float | None,
    request: RunRequest,
) -> int:
    """Run ``infer n w`` and wait until the meter has seen two more timestamp edges; return
    how many it had seen before, where this window's edges begin.

    A window's edges are all those seen from its ``infer`` until the next window's (or the end
    of the acquisition), so an edge the meter reports late still counts with its window, and
    no fixed wait for stragglers is needed."""
    before = len(meter.events())
    dut.infer(n, warmups, timeout_s=_infer_timeout(n, per_inference))
    meter.wait_for_events(before + 2, request.edge_timeout_s)
    return before


def _probe_duration(dut: DutClient, meter: Meter, n: int, request: RunRequest) -> float:
    """The meter-timed length of an ``infer n 0`` calibration probe."""
    first = _infer_edges(dut, meter, n, 0, None, request)
    events = meter.events()[first:]
    if len(events) < 2:
        raise RunError(
            f"the calibration probe gave {len(events)} timestamp edge(s), needs 2: check the "
            "timestamp pin (D7) wiring and that the firmware is built in energy mode"
        )
    return (events[-1].index - events[-2].index) / meter.sample_rate_hz


def _score_energy_windows(
    trace: Trace, groups: list[list[Event]], n: int, request: RunRequest, session: Session
) -> TinyResult:
    energies: list[WindowEnergy] = []
    checks: list[Check] = []
    for k, events in enumerate(groups):
        label = str(k)
        try:
            energies.append(integrate(trace, window_from_events(events, trace, n, label)))
            checks.append(Check(f"tiny.window[{k}]", True, f"{len(events)} edge(s) seen"))
        except TraceError as exc:  # a missing edge, or samples lost inside the window
            checks.append(Check(f"tiny.window[{k}]", False, str(exc)))
    checks.append(
        Check(
            "tiny.sample_drops",
            not trace.drops,
            f"{sum(d.missing for d in trace.drops)} sample(s) lost in {len(trace.drops)} drop(s)"
            if trace.drops else "no samples lost",
        )
    )
    result = score_energy(energies, checks)
    result.extras["iterations"] = n
    result.extras["sample_rate_hz"] = trace.sample_rate_hz
    _add_uncertainty(result, trace, energies, request.board.monitor_voltage_v,
                     session.data.get("meter") or {})
    session.after_results("power.png", lambda: plot_trace(
        trace, [e.window for e in energies], session.path("power.png"),
        f"{request.suite.name} on {request.board.name}, energy mode "
        f"({str(session.data['measured_as']).upper()}): median {result.value:.3f} uJ/inf",
    ))
    return result


def _add_uncertainty(result: TinyResult, trace: Trace, energies: list[WindowEnergy],
                     voltage_v: float, meter: dict) -> None:
    """Each window's uncertainty budget (:mod:`energy_monitor.uncertainty`) beside it, and
    the expanded uncertainty of the score: that of the median window (the larger of the
    middle two for an even count), per inference."""
    kind = str(meter.get("kind", ""))
    if kind == "otii" and "Ace" in str(meter.get("model", "")):
        kind = "otii-ace"
    per_inference: list[tuple[float, float]] = []
    for row, e in zip(result.windows, energies, strict=True):
        w = e.window
        if trace.energy_j is not None:
            samples, what = trace.energy_j[w.start_index:w.end_index], "energy_j"
        elif trace.current_a is not None:
            samples, what = trace.current_a[w.start_index:w.end_index], "current_a"
        else:
            samples, what = None, "power_w"
        budget = energy_budget(kind, energy_j=e.energy_j, duration_s=e.duration_s,
                               voltage_v=voltage_v, sample_rate_hz=trace.sample_rate_hz,
                               alignment_bound_s=w.alignment_bound_s, samples=samples,
                               samples_are=what)
        row["uncertainty"] = budget.record()
        per_inference.append((row["energy_per_inference_uj"],
                              budget.expanded_j / w.work_count * 1e6))
        result.extras["uncertainty_complete"] = (
            result.extras.get("uncertainty_complete", True) and budget.complete)
    if not per_inference or math.isnan(result.value):
        return
    ordered = sorted(per_inference)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    result.extras["energy_uncertainty_uj"] = max(u for _, u in middle)
    result.extras["uncertainty_k"] = COVERAGE_K


def _save_trace_in_place_of_columns(trace: Trace, session: Session) -> None:
    """Write ``trace.npz`` and, once it is on stable storage, remove the sample columns the
    meter wrote while measuring (``*.f64``, ``*.f32``): the trace holds the same values,
    compressed, and the meter's raw stream stays as the evidence. A PPK2 minute is 48 MB of
    float64 that trace.npz and ppk2-raw.bin both already hold. A run that fails keeps its
    columns (``tinypower recover`` reads them)."""
    path = session.path("trace.npz")
    save_trace(trace, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for column in session.folder.iterdir():
        if column.suffix in COLUMN_DTYPES:
            column.unlink()  # on POSIX the trace's memmap of it stays readable


def _save_partial_trace(meter: Meter, session: Session) -> None:
    """Keep what the meter gave before a failure, next to its raw stream (which holds it
    too, so a failure to write this copy is noted, not raised over the first failure)."""
    try:
        save_trace(meter.trace(), session.path("trace-partial.npz"))
    except (OSError, MeterError, TraceError) as exc:
        why = disk_error(exc, session.path("trace-partial.npz")) if isinstance(exc, OSError) \
            else exc
        session.data["partial_trace"] = f"not saved: {why}"


def _measure_accuracy(
    dut: DutClient, request: RunRequest, outcome: RunOutcome, progress: Progress
) -> TinyResult:
    suite, dataset = request.suite, request.dataset
    reference = ReferenceModel(request.model.data, suite)
    per_file: list[np.ndarray] = []
    agree = total = 0
    for i, sample in enumerate(dataset.samples):
        progress(f"accuracy: {sample.name}", i, len(dataset.samples))
        outputs = []
        for window in suite.windows_of(sample.data):
            dut.load(window, verify=request.verify_inputs)
            reply = dut.infer(1, 0)
            agree += reply.results_payload == reference.results_payload(window)
            total += 1
            outputs.append(np.asarray(reply.results, dtype=np.float64))
        per_file.append(np.mean(outputs, axis=0))
    progress("accuracy done", len(dataset.samples), len(dataset.samples))
    agreement = 100.0 * agree / total
    checks = [
        Check("tiny.reference_agreement", agree == total,
              f"{agree} of {total} DUT outputs identical to the host reference", "warn"),
        finite_outputs_check(per_file),
    ]
    extras: dict = {"reference_agreement_percent": agreement, "files": len(per_file),
                    "inferences": total}
    # Accuracy only on the complete labelled set; anything less is agreement with the host's
    # reference interpreter, stored and printed under that name.
    metric, value, unit = "reference_agreement", agreement, "%"
    if dataset.labelled:
        labels = [s.label for s in dataset.samples]
        complete = len(dataset.samples) == dataset.listed
        checks.append(Check(
            "tiny.dataset_complete", complete,
            f"{len(dataset.samples)} of {dataset.listed} listed files measured"
            + ("" if complete else ": the result is reference agreement, not accuracy"),
            "warn",
        ))
        if checks[1].passed:
            accuracy_metric, accuracy, accuracy_unit = _accuracy_metric(suite, per_file, labels)
            if complete:
                metric, value, unit = accuracy_metric, accuracy, accuracy_unit
                target = ACCURACY_TARGETS[suite.name]
                checks.append(Check(
                    "tiny.accuracy_target", not math.isnan(value) and value >= target,
                    f"{metric} {value:.3f} {unit}, target {target} {unit}"))
            else:
                extras[f"partial_{accuracy_metric}"] = accuracy
    if request.model.source == "synthetic":
        checks.append(Check("tiny.model", False, request.model.note, "warn"))
    if is_ours(outcome.session.data.get("dut", {}).get("name", "")):
        outcome.notes.append("the software DUT answers with the host's reference model: its "
                             "reference agreement is 100% by construction")
    return TinyResult("accuracy", metric, value, unit, checks=checks, extras=extras)


def _accuracy_metric(
    suite: Suite, per_file: list[np.ndarray], labels: list[int | None]
) -> tuple[str, float, str]:
    if suite.metric == "auc":
        scores = [float(v[0]) for v in per_file]
        try:
            return "auc", binary_auc(scores, [lab == 1 for lab in labels]), ""
        except ValueError:
            return "auc", float("nan"), ""
    try:
        return "top1", top1_percent(per_file, labels), "%"
    except ValueError:
        return "top1", float("nan"), "%"


def _finish(outcome: RunOutcome, request: RunRequest, ended: str = "incomplete") -> None:
    """Write the result record and ``results.txt``, then the optional artefacts (plots), then
    the session's final state; a write that fails is reported, never raised over the result.
    ``ended`` is the state of a run that has an error: ``incomplete`` or ``interrupted``."""
    session = outcome.session
    session.release_reserve()  # the space kept at the start, for these last words
    try:
        session.write_json("results.json", {
            "record": outcome.record(request),
            "windows": outcome.result.windows if outcome.result else [],
            "checks": [c.__dict__ for c in outcome.result.checks] if outcome.result else [],
        })
        if outcome.result:
            session.write_text("results.txt", results_text(outcome.result, outcome.measured_as))
    except SessionError as exc:
        outcome.error = f"{outcome.error}; {exc}" if outcome.error else str(exc)
    outcome.notes += session.write_after_results()
    try:
        if outcome.error:
            session.finish(ended, outcome.error)
        elif outcome.result and not outcome.result.valid:
            session.finish("invalid", "; ".join(c.message for c in outcome.result.failures))
        else:
            session.finish("complete")
    except SessionError as exc:
        outcome.notes.append(f"{exc}: the session still says running; `tinypower recover` "
                             "marks it once there is space")
        return
    try:
        # Every session measured in a runs folder is indexed in its store.
        add_session(request.runs_dir / DEFAULT_DB.name, session.folder)
    except (RecordError, StoreError, sqlite3.Error) as exc:
        # The session folder holds everything; the store is an index that can be rebuilt.
        outcome.notes.append(f"not added to the result store: {exc}")

