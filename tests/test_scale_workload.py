"""Workloads under the real MLPerf LoadGen: our .tflite workload in each scenario, any command
that writes a LoadGen log, and the errors a user can act on."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tinypower.scale import workload as wl

MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny" / \
    "kws_ref_model.tflite"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"MLPerf Tiny model not at {MODEL}")


def _run(workload: wl.Workload, tmp_path: Path) -> wl.WorkloadRun:
    log_dir, output = tmp_path / "log", tmp_path / "workload.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    proc = wl.start(workload, log_dir, output)
    proc.wait(timeout=60)
    return wl.finish(workload, proc, log_dir, output, t0, time.time())


@pytest.mark.parametrize("scenario, per_query, min_queries, qps", [
    ("SingleStream", 1, 1, None),
    ("MultiStream", 8, 662, None),  # mlperf.conf: enough queries for p99 early stopping
    ("Server", 1, 1, 1000.0),  # ~1000 queries: enough for early stopping, light on a busy CI
    ("Offline", None, 1, None),
])
def test_loadgen_runs_the_model_in_each_scenario(tmp_path, scenario, per_query, min_queries,
                                                 qps):
    spec = wl.LoadGenSpec(MODEL, scenario, min_duration_s=1.0 if qps else 0.5,
                          min_query_count=min_queries, target_qps=qps)
    run = _run(spec, tmp_path)
    assert run.scenario == scenario
    assert run.log["result_validity"] == "VALID"
    assert run.duration_s >= 0.5
    assert int(run.log["result_query_count"]) >= 1
    if per_query:
        assert int(run.log["effective_samples_per_query"]) == per_query
    else:  # Offline: one query holding every sample
        assert int(run.log["result_query_count"]) == 1
        assert float(run.log["result_samples_per_second"]) > 0
    assert [p.name for p in run.files] == ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]


def test_tflite_micro_runs_the_same_model():
    litert, micro = wl.TfliteModel(MODEL, "litert"), wl.TfliteModel(MODEL, "tflite-micro")
    x = litert.random_inputs(1)[0]
    assert litert.input_shape == micro.input_shape == (1, 49, 10, 1)
    assert (litert.infer(x) == micro.infer(x)).all()


WRITE_LOG = """
import json, sys, time
from datetime import UTC, datetime
def stamp(t):
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%m-%d-%Y %H:%M:%S.") + f"{d.microsecond // 1000:03d}"
begin = time.time() - float(sys.argv[2])
with open(sys.argv[1] + "/mlperf_log_detail.txt", "w") as f:
    for key, value in (("effective_scenario", "Offline"), ("power_begin", stamp(begin)),
                       ("power_end", stamp(begin + 0.5))):
        f.write(":::MLLOG " + json.dumps({"key": key, "value": value}) + "\\n")
"""


def test_any_command_that_writes_a_loadgen_log_is_a_workload(tmp_path):
    run = _run(wl.CommandWorkload([sys.executable, "-c", WRITE_LOG, "{log_dir}", "0.6"]),
               tmp_path)
    assert run.scenario == "Offline" and run.log_dir == tmp_path / "log"
    assert run.duration_s == pytest.approx(0.5)


def test_a_stale_log_is_refused(tmp_path):
    """A log whose power window lies before the command ran is an earlier run's."""
    with pytest.raises(wl.WorkloadError, match="stale log"):
        _run(wl.CommandWorkload([sys.executable, "-c", WRITE_LOG, "{log_dir}", "30"]),
             tmp_path)


def test_workload_failures_say_why(tmp_path):
    with pytest.raises(wl.WorkloadError, match="(?s)exited with status 2.*not found"):
        _run(wl.LoadGenSpec(tmp_path / "missing.tflite"), tmp_path)
    with pytest.raises(wl.WorkloadError, match="(?s)no usable LoadGen log.*missing"):
        _run(wl.CommandWorkload(["true"]), tmp_path)
    with pytest.raises(wl.WorkloadError, match="cannot start the workload"):
        _run(wl.CommandWorkload(["/nonexistent/benchmark"]), tmp_path)
    with pytest.raises(wl.WorkloadError, match="unknown LoadGen scenario"):
        wl.LoadGenSpec(MODEL, "Batch")
