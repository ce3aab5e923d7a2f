"""Workloads under MLPerf LoadGen: what the SUT runs while the director's meters read power.

A workload is a command that writes an MLPerf LoadGen log (``mlperf_log_detail.txt``, with
``power_begin``/``power_end``) into a folder. Ours, :class:`LoadGenSpec`, is this module run as
``python -m tinypower.scale.workload``: the real LoadGen (``mlperf_loadgen``) drives a ``.tflite``
model through ai-edge-litert (tflite-micro's interpreter where LiteRT is not installed) in
SingleStream, MultiStream, Server or Offline. Any other benchmark that writes the same log is a
:class:`CommandWorkload`. The client starts either as a child process, so it can keep checking
the clock skew with the director while the workload runs, and reads the power window from the
log afterwards (``tinypower.results.power_logs`` reads it, as it reads published logs).
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tinypower.children import die_with_parent
from tinypower.results.power_logs import PowerLogError, loadgen_window, read_mlperf_log

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
RUNTIMES = ("auto", "litert", "tflite-micro")
MULTISTREAM_SAMPLES_PER_QUERY = 8  # MLPerf's MultiStream query size
RULE_MIN_DURATION_S = 600.0  # mlperf.conf: every scenario runs at least 10 minutes
HEADROOM = 2.0  # LoadGen plans for twice the measured rate (see run_loadgen)


class WorkloadError(RuntimeError):
    """The workload could not run or left no usable LoadGen log; the message says why."""


@dataclass(frozen=True)
class LoadGenSpec:
    """Our LoadGen workload: a ``.tflite`` model in one scenario.

    ``target_qps`` is Server's ``server_target_qps`` and Offline's ``offline_expected_qps``;
    left unset, the workload measures the model's single-stream rate first and uses half of it
    (Server, so queries do not pile up) or twice it (Offline, so LoadGen issues enough samples
    to fill ``min_duration_s`` even if the model runs faster than measured).
    """

    model: Path
    scenario: str = "SingleStream"
    min_duration_s: float = RULE_MIN_DURATION_S
    min_query_count: int = 100  # LoadGen's default
    target_qps: float | None = None
    server_latency_ms: float = 100.0
    samples: int = 64  # inputs in the query sample library (seeded random tensors)
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise WorkloadError(
                f"unknown LoadGen scenario {self.scenario!r}; choose from {', '.join(SCENARIOS)}"
            )
        if self.runtime not in RUNTIMES:
            raise WorkloadError(f"unknown runtime {self.runtime!r}; choose from {RUNTIMES}")
        if not self.min_duration_s > 0 or self.min_query_count < 1 or self.samples < 1:
            raise WorkloadError("min_duration_s must be > 0, min_query_count and samples >= 1")
        if self.target_qps is not None and not self.target_qps > 0:
            raise WorkloadError(f"target_qps must be positive, got {self.target_qps}")

    def command(self, log_dir: Path) -> list[str]:
        argv = [
            sys.executable, "-m", "tinypower.scale.workload", "--model", str(self.model),
            "--scenario", self.scenario, "--min-duration-s", repr(self.min_duration_s),
            "--min-query-count", str(self.min_query_count), "--samples", str(self.samples),
            "--server-latency-ms", repr(self.server_latency_ms), "--runtime", self.runtime,
            "--log-dir", str(log_dir),
        ]
        if self.target_qps is not None:
            argv += ["--target-qps", repr(self.target_qps)]
        return argv


@dataclass(frozen=True)
class CommandWorkload:
    """Any command that writes an MLPerf LoadGen log into ``log_dir`` (``{log_dir}`` in the
    arguments is replaced by the folder the client gives each phase)."""

    argv: list[str]
    log_dir: Path | None = None  # where the command writes its log; None: the phase's folder

    def command(self, log_dir: Path) -> list[str]:
        if not self.argv:
            raise WorkloadError("the workload command is empty; give the program and arguments")
        return [a.replace("{log_dir}", str(log_dir)) for a in self.argv]


Workload = LoadGenSpec | CommandWorkload


@dataclass
class WorkloadRun:
    """A finished workload: its LoadGen log and the power window it states."""

    log_dir: Path
    log: dict[str, object]
    begin: datetime  # power_begin, naive UTC as LoadGen writes it
    end: datetime
    wall_start_s: float  # client wall clock (UTC epoch) around the command
    wall_end_s: float
    returncode: int
    files: list[Path] = field(default_factory=list)

    @property
    def scenario(self) -> str:
        return str(self.log.get("effective_scenario", ""))

    @property
    def duration_s(self) -> float:
        return (self.end - self.begin).total_seconds()


def start(workload: Workload, log_dir: Path, output: Path) -> subprocess.Popen:
    """Start the workload as a child process writing its console output to ``output``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = workload.command(log_dir)
    try:
        with output.open("wb") as console:
            # Killed with the client, even by kill -9: no LoadGen left running.
            return subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
    except OSError as exc:
        raise WorkloadError(f"cannot start the workload {argv[0]!r}: {exc}") from None


def finish(
    workload: Workload, proc: subprocess.Popen, log_dir: Path, output: Path,
    wall_start_s: float, wall_end_s: float,
) -> WorkloadRun:
    """Check a finished workload and read its power window, which must fall inside the wall
    times the client bracketed it with (MLPerf's client picks the log the same way)."""
    folder = workload.log_dir if isinstance(workload, CommandWorkload) and workload.log_dir \
        else log_dir
    rc = proc.wait()
    detail = folder / "mlperf_log_detail.txt"
    if rc != 0:
        tail = output.read_text(errors="replace")[-800:] if output.is_file() else ""
        raise WorkloadError(f"the workload exited with status {rc}; its last output:\n{tail}")
    try:
        log = read_mlperf_log(detail)
        begin, end = loadgen_window(log, detail)
    except PowerLogError as exc:
        raise WorkloadError(f"the workload left no usable LoadGen log: {exc}") from None
    begin_s, end_s = (b.replace(tzinfo=UTC).timestamp() for b in (begin, end))
    slack_s = 1.0  # power_begin/end carry milliseconds; the bracket is the client's clock
    if begin_s < wall_start_s - slack_s or end_s > wall_end_s + slack_s:
        raise WorkloadError(
            f"{detail}: power_begin/power_end ({begin} .. {end} UTC) fall outside the time the "
            "workload ran: a stale log from an earlier run, or the SUT clock is not on UTC"
        )
    files = [p for p in sorted(folder.glob("mlperf_log_*.txt"))]
    return WorkloadRun(folder, log, begin, end, wall_start_s, wall_end_s, rc, files)


# --- the LoadGen workload itself (runs in the child process) ---------------------------------


class TfliteModel:
    """One model in ai-edge-litert's interpreter, or tflite-micro's where LiteRT is missing."""

    def __init__(self, path: Path, runtime: str = "auto") -> None:
        data = path.read_bytes()
        self.runtime = runtime
        if runtime in ("auto", "litert"):
            try:
                from ai_edge_litert.interpreter import Interpreter
                self.runtime = "litert"
            except ImportError:
                if runtime == "litert":
                    raise WorkloadError(
                        "ai-edge-litert is not installed: pip install ai-edge-litert"
                    ) from None
                self.runtime = "tflite-micro"
        try:
            if self.runtime == "litert":
                self._interp = Interpreter(model_content=data, num_threads=1)
                self._interp.allocate_tensors()
                inp = self._interp.get_input_details()[0]
                self._in_index = inp["index"]
                self._out_index = self._interp.get_output_details()[0]["index"]
            else:
                from tflite_micro import runtime as tflm

                self._interp = tflm.Interpreter.from_bytes(data)
                inp = self._interp.get_input_details(0)
        except (ValueError, RuntimeError) as exc:
            raise WorkloadError(f"{path} is not a model {self.runtime} can run: {exc}") from None
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])

    def random_inputs(self, count: int, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        if np.issubdtype(self.input_dtype, np.integer):
            info = np.iinfo(self.input_dtype)
            return [rng.integers(info.min, info.max, self.input_shape, endpoint=True)
                    .astype(self.input_dtype) for _ in range(count)]
        return [rng.standard_normal(self.input_shape).astype(self.input_dtype)
                for _ in range(count)]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        if self.runtime == "litert":
            self._interp.set_tensor(self._in_index, tensor)
            self._interp.invoke()
            return self._interp.get_tensor(self._out_index)
        self._interp.set_input(tensor, 0)
        self._interp.invoke()
        return self._interp.get_output(0)


def single_stream_rate(model: TfliteModel, inputs: list[np.ndarray], seconds: float = 0.3) -> float:
    """Inferences per second, one at a time: the fastest of five windows over about
    ``seconds`` in all. The fastest, because LoadGen pre-generates queries from this rate: a
    window slowed by another process on a busy machine would make it plan too few queries and
    stop before ``min_duration_s`` (an INVALID run), while planning for more costs nothing."""
    model.infer(inputs[0])  # the first call allocates
    best, count = 0.0, 0
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            model.infer(inputs[count % len(inputs)])
            count += 1
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
    return best


def run_loadgen(spec: LoadGenSpec, log_dir: Path) -> dict[str, object]:
    """Run LoadGen in this process; return the detail log's first value of each key."""
    import mlperf_loadgen as lg

    model = TfliteModel(spec.model, spec.runtime)
    inputs = model.random_inputs(spec.samples)
    rate = single_stream_rate(model, inputs)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(spec.min_duration_s * 1000)
    settings.min_query_count = spec.min_query_count
    # Expected latencies and rates from the measured rate, with headroom (the SUT may run
    # faster under LoadGen than in the short measurement), so LoadGen pre-generates enough
    # queries to fill min_duration_s; its defaults assume a much slower SUT.
    if spec.scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = int(1e9 / (rate * HEADROOM))
    elif spec.scenario == "Server":
        settings.server_target_qps = spec.target_qps or rate / 2
        settings.server_target_latency_ns = int(spec.server_latency_ms * 1e6)
    elif spec.scenario == "Offline":
        settings.offline_expected_qps = spec.target_qps or rate * HEADROOM
    elif spec.scenario == "MultiStream":
        settings.multi_stream_samples_per_query = MULTISTREAM_SAMPLES_PER_QUERY
        settings.multi_stream_expected_latency_ns = int(
            MULTISTREAM_SAMPLES_PER_QUERY * 1e9 / (rate * HEADROOM))

    work: queue.Queue = queue.Queue()

    def serve() -> None:
        # One worker runs the queries in arrival order, so LoadGen's issuing thread is never
        # blocked by inference (Server's Poisson arrivals stay on time).
        while (samples := work.get()) is not None:
            responses = []
            for s in samples:
                model.infer(inputs[s.index])
                responses.append(lg.QuerySampleResponse(s.id, 0, 0))
            lg.QuerySamplesComplete(responses)

    worker = threading.Thread(target=serve, name="loadgen-sut", daemon=True)
    worker.start()
    sut = lg.ConstructSUT(lambda samples: work.put(samples), lambda: None)
    qsl = lg.ConstructQSL(spec.samples, spec.samples, lambda idx: None, lambda idx: None)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        work.put(None)
        worker.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return read_mlperf_log(log_dir / "mlperf_log_detail.txt")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinypower.scale.workload",
                                description="Run a .tflite model under MLPerf LoadGen.")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--scenario", choices=SCENARIOS, default="SingleStream")
    p.add_argument("--min-duration-s", type=float, default=RULE_MIN_DURATION_S)
    p.add_argument("--min-query-count", type=int, default=100)
    p.add_argument("--target-qps", type=float)
    p.add_argument("--server-latency-ms", type=float, default=100.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--runtime", choices=RUNTIMES, default="auto")
    p.add_argument("--log-dir", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if not args.model.is_file():
            raise WorkloadError(f"model {args.model} not found; give a .tflite path")
        spec = LoadGenSpec(args.model, args.scenario, args.min_duration_s, args.min_query_count,
                           args.target_qps, args.server_latency_ms, args.samples, args.runtime)
        log = run_loadgen(spec, args.log_dir)
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{log.get('effective_scenario')}: {log.get('result_validity')}, "
          f"{log.get('result_query_count')} queries, power window {log.get('power_begin')} .. "
          f"{log.get('power_end')} UTC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
