"""MLPerf Training energy-to-train: 1,000 nodes x 2 hours of 1 s energy counters backfilled into
a real Prometheus, a run window from an MLPerf training log, counter resets and a gap; per-node
CSV logs; the rules; the CLI."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from energy_monitor.sim.fleet import (
    PrometheusServer,
    ToolMissing,
    backfill,
    simulate_fleet,
    write_openmetrics,
)
from tinypower.cli import main
from tinypower.results.db import query
from tinypower.results.record import records_from_session
from tinypower.rules.training import (
    NodeSampling,
    estimate_interconnect,
    olympic_runs,
    sampling_checks,
)
from tinypower.scale.training import (
    TrainingLogError,
    read_run_window,
    scale_out_rows,
    training_energy_from_csv,
)

T0 = 1_700_006_400.0  # a 2 h block boundary: one TSDB block
NODES = 1000
RESET_NODES = (10, 20, 30)
GAP_NODE = 500
RUN_START, RUN_STOP = T0 + 1800.123, T0 + 5400.456


@pytest.fixture(scope="session")
def big_fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    began = time.monotonic()
    fleet = simulate_fleet(
        NODES, T0, 7200, kind="energy",
        resets={i: [T0 + 2500.5 + i] for i in RESET_NODES} | {40: [T0 + 100.0]},
        gaps={GAP_NODE: [(T0 + 3000.0, T0 + 3120.0)]}, seed=7,
    )
    om = write_openmetrics([fleet], folder / "fleet.om")
    written = time.monotonic()
    try:
        backfill(om, folder / "tsdb")
        om.unlink()
        server = PrometheusServer(folder / "tsdb")
    except ToolMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must install it: see .ci/run)")
        pytest.skip(str(exc))
    print(f"\nfleet fixture: simulate+write {written - began:.1f} s, promtool backfill + "
          f"server start {time.monotonic() - written:.1f} s")
    yield server, fleet
    server.stop()


def _training_log(path, start_s=RUN_START, stop_s=RUN_STOP, status="success"):
    def mllog(key, time_s, event, metadata):
        entry = {"namespace": "", "time_ms": round(time_s * 1000), "event_type": event,
                 "key": key, "value": "llama2_70b_lora" if key == "submission_benchmark"
                 else None, "metadata": metadata}
        return ":::MLLOG " + json.dumps(entry)

    lines = [
        mllog("submission_benchmark", start_s - 5, "POINT_IN_TIME", {}),
        "some framework chatter",
        "0: " + mllog("run_start", start_s, "INTERVAL_START", {"file": "train.py"}),
        "0: " + mllog("run_stop", stop_s, "INTERVAL_END", {"status": status}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_energy_to_train_of_1000_nodes_matches_the_truth(big_fleet, tmp_path, capsys) -> None:
    server, fleet = big_fleet
    log = _training_log(tmp_path / "result_0.txt")
    began = time.monotonic()
    code = main(["training-energy", "--log", str(log), "--prometheus", server.url,
                 "--query", "node_energy_joules_total", "--kind", "energy",
                 "--nodes", ",".join(n.name for n in fleet.nodes),
                 "--measured-as", "simulated", "--interconnect-max-w", "2000",
                 "--provisioning-ratio", "0.5", "--runs-dir", str(tmp_path / "runs"),
                 "--json"])
    took = time.monotonic() - began
    out = json.loads(capsys.readouterr().out)
    [record] = query(tmp_path / "runs" / "results.sqlite")
    assert (record.scale, record.scenario, record.unit) == ("fleet", "training", "kJ")
    assert record.value == pytest.approx(out["energy_to_train_kj"])
    assert record.source == str(Path(out["session"]).resolve())
    assert not record.valid and record.failed_rules == ("training.no_gaps",)
    print(f"energy-to-train of {NODES} nodes x 1 h: {took:.1f} s")
    assert code == 1  # the gap makes it invalid
    assert out["nodes"] == NODES and out["measured_as"] == "simulated"
    assert out["transport"] == "remote-read"
    duration = RUN_STOP - RUN_START
    assert out["time_to_train_s"] == pytest.approx(duration, abs=1e-3)
    truth_j = fleet.true_energy_j(RUN_START, RUN_STOP)
    interconnect_j = 2000 * duration * 0.5
    assert out["interconnect"]["how"] == "estimated"
    assert out["interconnect"]["energy_kj"] == pytest.approx(interconnect_j / 1000)
    assert out["energy_to_train_kj"] * 1000 == pytest.approx(truth_j + interconnect_j, rel=1e-3)
    node_truth = {n.name: n.true_energy_j(RUN_START, RUN_STOP) for n in fleet.nodes}
    for i in RESET_NODES:  # the reset costs at most the unread second before it
        name = fleet.nodes[i].name
        assert out["node_energy_kj"][name] * 1000 == pytest.approx(node_truth[name], rel=1e-3)
    clean = [n.name for k, n in enumerate(fleet.nodes) if k not in (*RESET_NODES, GAP_NODE)]
    got = np.array([out["node_energy_kj"][n] * 1000 for n in clean])
    want = np.array([node_truth[n] for n in clean])
    assert np.max(np.abs(got / want - 1)) < 1e-5  # exact counters, interpolated ends
    failed = {c["rule"]: c["message"] for c in out["checks"] if not c["passed"]}
    assert list(failed) == ["training.no_gaps"]
    assert fleet.nodes[GAP_NODE].name in failed["training.no_gaps"]
    [problem] = out["problems"]
    assert fleet.nodes[GAP_NODE].name in problem and "gap of 12" in problem


def test_fleet_command_lists_missing_nodes_and_resets(big_fleet, capsys, tmp_path) -> None:
    server, fleet = big_fleet
    names = [n.name for n in fleet.nodes[:41]] + ["node99999"]
    code = main(["fleet", "--runs-dir", str(tmp_path), "--prometheus", server.url, "--query",
                 "node_energy_joules_total",
                 "--kind", "energy", "--nodes", ",".join(names), "--measured-as", "simulated",
                 "--window", "2023-11-15T00:30:00Z", str(T0 + 3600), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["missing"] == ["node99999"]
    assert out["start_s"] == T0 + 1800  # T0 is 2023-11-15T00:00:00Z
    assert [out["nodes"][fleet.nodes[i].name]["resets"] for i in (10, 20, 30)] == [1, 1, 1]
    assert out["nodes"][fleet.nodes[40].name]["resets"] == 0  # reset before the window
    assert out["total_energy_j"] == pytest.approx(
        sum(n.true_energy_j(T0 + 1800, T0 + 3600) for n in fleet.nodes[:41]), rel=1e-3)


def test_csv_node_logs_give_energy_to_train_with_estimated_interconnect(tmp_path) -> None:
    fleet = simulate_fleet(4, T0, 400, kind="power", seed=3)
    logs = tmp_path / "nodes"
    logs.mkdir()
    for n in fleet.nodes:
        np.savetxt(logs / f"{n.name}.csv", np.column_stack([n.time_s, n.value]), delimiter=",",
                   header="time_s,power_w", comments="", fmt="%.3f")
    run = read_run_window(_training_log(tmp_path / "log.txt", T0 + 50, T0 + 350))
    interconnect = estimate_interconnect(100.0, run.duration_s, 0.25)
    result = training_energy_from_csv(run, logs, None, interconnect, measured_as="simulated")
    assert result.valid, [c.message for c in result.failures]
    assert result.energy_kj * 1000 == pytest.approx(
        fleet.true_energy_j(T0 + 50, T0 + 350) + 100.0 * 300 * 0.25, rel=1e-3)
    assert set(result.node_energy_kj) == {n.name for n in fleet.nodes}
    [row] = scale_out_rows([result])
    assert row["nodes"] == 4 and row["interconnect"] == "estimated"
    assert row["energy_per_node_kj"] == pytest.approx(result.energy_kj / 4)
    # the same through the CLI
    code = main(["training-energy", "--log", str(tmp_path / "log.txt"), "--csv-dir", str(logs),
                 "--measured-as", "simulated", "--interconnect-max-w", "100",
                 "--provisioning-ratio", "0.25", "--runs-dir", str(tmp_path / "runs")])
    assert code == 0


def test_a_short_run_and_slow_sampling_break_the_rules() -> None:
    checks = {c.rule: c for c in sampling_checks(
        [NodeSampling("a", 45, 1.0, 1.0), NodeSampling("b", 300, 2.0, 1.0),
         NodeSampling("c", 600, 1.005, 1.0)], missing=["d"], run_status="aborted")}
    assert not checks["training.min_60_samples"].passed
    assert "a (45)" in checks["training.min_60_samples"].message
    assert not checks["training.sampling_1hz"].passed
    assert "b (2.000 s)" in checks["training.sampling_1hz"].message
    assert "c (" not in checks["training.sampling_1hz"].message  # 0.5% jitter is fine
    assert not checks["training.all_nodes_measured"].passed
    assert not checks["training.run_completed"].passed
    assert checks["training.no_gaps"].passed


def test_interconnect_estimate_and_olympic_runs() -> None:
    est = estimate_interconnect(1500.0, 600.0, 0.25)
    assert est.energy_j == 1500.0 * 600.0 * 0.25 and est.how == "estimated"
    assert "estimated" in est.detail
    with pytest.raises(ValueError, match="provisioning ratio"):
        estimate_interconnect(1500.0, 600.0, 1.5)
    assert olympic_runs([30.0, 10.0, 20.0, 50.0, 40.0]) == [0, 2, 4]
    with pytest.raises(ValueError, match="at least 3"):
        olympic_runs([1.0, 2.0])


def test_bad_logs_name_the_problem(tmp_path, capsys) -> None:
    log = tmp_path / "log.txt"
    log.write_text(':::MLLOG {"key": "run_start", "time_ms": 1000}\n')
    with pytest.raises(TrainingLogError, match="no run_stop"):
        read_run_window(log)
    code = main(["training-energy", "--log", str(log), "--csv-dir", str(tmp_path),
                 "--measured-as", "simulated", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and "no run_stop" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no result, no session folder
    bad = tmp_path / "csv"
    bad.mkdir()
    (bad / "n1.csv").write_text("t,watts\n1,2\n")
    run = read_run_window(_training_log(tmp_path / "ok.txt", 0.5, 1.5))
    with pytest.raises(TrainingLogError, match="expected time_s,power_w"):
        training_energy_from_csv(run, bad, None, estimate_interconnect(0, 1, 1),
                                 measured_as="simulated")


def test_scale_out_sessions_are_stored_and_plotted_by_the_report(tmp_path, capsys) -> None:
    """Runs of 2, 4 and 8 nodes, each kept as a session folder and stored as a fleet record;
    the report of the three shows energy against nodes, from scale_out_rows()."""
    runs, db = tmp_path / "runs", tmp_path / "store.sqlite"
    folders = []
    for nodes, duration_s in ((2, 300), (4, 160), (8, 90)):
        fleet = simulate_fleet(nodes, T0, duration_s + 20, kind="power", seed=nodes)
        logs = tmp_path / f"nodes-{nodes}"
        logs.mkdir()
        for n in fleet.nodes:
            np.savetxt(logs / f"{n.name}.csv", np.column_stack([n.time_s, n.value]),
                       delimiter=",", header="time_s,power_w", comments="", fmt="%.3f")
        log = _training_log(tmp_path / f"log-{nodes}.txt", T0 + 10, T0 + 10 + duration_s)
        assert main(["training-energy", "--log", str(log), "--csv-dir", str(logs),
                     "--measured-as", "simulated", "--runs-dir", str(runs), "--db", str(db),
                     "--system", f"cluster-{nodes}", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        folder = Path(out["session"])
        saved = json.loads((folder / "training.json").read_text())
        assert saved["scale_out"]["nodes"] == nodes
        assert saved["scale_out"]["energy_to_train_kj"] == pytest.approx(
            fleet.true_energy_j(T0 + 10, T0 + 10 + duration_s) / 1000, rel=1e-3)
        assert (folder / "training_log.txt").read_bytes() == log.read_bytes()
        folders.append(folder)
    records = query(db)
    assert [r.system for r in records] == ["cluster-2", "cluster-4", "cluster-8"]
    for record, folder in zip(records, folders, strict=True):
        assert record == records_from_session(folder)[0]
        assert record.scale == "fleet" and record.measured_as == "simulated" and record.valid
        assert record.power_w == pytest.approx(record.energy_j / record.duration_s)
        assert record.alignment_bound_s == pytest.approx(1.0)  # the nodes' 1 s readings
    assert not (runs / "results.sqlite").exists()  # --db took the record instead

    report = tmp_path / "report.html"
    assert main(["report", *map(str, reversed(folders)), "--out", str(report)]) == 0
    text = report.read_text()
    section = text[text.index('<section id="scaleout">'):text.index('<section id="published">')]
    assert section.count("<img") == 1
    rows = re.findall(r"<tr><td>#(\d)</td><td>[^<]*</td><td>(\d+)</td>", section)
    assert rows == [("3", "2"), ("2", "4"), ("1", "8")]  # sorted by nodes, run numbers kept
    for folder in folders:
        row = json.loads((folder / "training.json").read_text())["scale_out"]
        assert f"{row['energy_to_train_kj']:.3f}" in section
