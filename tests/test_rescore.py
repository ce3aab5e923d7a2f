"""`tinypower rescore`: every published case re-derived, every planted inconsistency flagged.

Fixtures: ``shared/mlperf-logs`` (its ``CASES.md`` lists each case with its published value);
skipped where absent. Faults are planted in tmp_path copies, never in the shared files. Our own
virtual-lab sessions must rescore to the value they stored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tinypower.cli import main
from tinypower.results.rescore import (
    find_cases,
    read_published_table,
    rescore_case,
    rescore_tree,
)

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
CASES = LOGS / "CASES.md"
TE01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/energy"
TP01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/performance"
POWER = LOGS / "power/v2.1/Dell/XR12_A2x1_TRT_MaxQ/resnet50"

needs_logs = pytest.mark.skipif(
    not CASES.is_file(), reason=f"published MLPerf logs not found at {LOGS} (fixtures absent)"
)


def case_rows() -> list[tuple[str, str, float]]:
    """(case id, folder, published) from CASES.md, so every listed case is tested."""
    if not CASES.is_file():
        return []
    rows = []
    for line in CASES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and cells[0] not in ("case", "") and not cells[0].startswith("-"):
            rows.append((cells[0], cells[2], float(cells[3])))
    return rows


@needs_logs
@pytest.mark.parametrize(("case_id", "folder", "published"), case_rows(),
                         ids=[r[0] for r in case_rows()])
def test_every_case_matches_published(case_id: str, folder: str, published: float) -> None:
    table = read_published_table(CASES)
    case = rescore_case(LOGS / folder, table)
    assert case.status == "match", case.reasons
    assert case.reasons[0].startswith("matches published")
    assert case.published == published
    assert abs(case.derived - published) <= 1e-4 * published


@needs_logs
def test_tree_walk_finds_all_cases_and_cli_exits_zero(capsys) -> None:
    assert len(find_cases(LOGS)) == len(case_rows()) == 14
    assert main(["rescore", str(LOGS), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["status"] for line in lines} == {"match"}
    assert {line["kind"] for line in lines} >= {
        "tiny_energy_eembc", "tiny_energy_newrunner", "tiny_energy_summary", "tiny_perf_eembc",
        "tiny_perf_newrunner", "tiny_accuracy", "power"}
    assert set(lines[0]) >= {"path", "kind", "published", "derived", "unit", "status", "reasons"}


@needs_logs
def test_eembc_ambiguity_range_and_exact_offsets_are_reported() -> None:
    case = rescore_case(TE01)
    lo, hi = case.derived_range
    assert lo < 1004.221 < hi and hi - lo < 0.2
    assert any("edge offsets [(1, 1), (1, 0), (0, 1), (1, 1), (1, 1)]" in r for r in case.reasons)
    assert any("+-1 sample window ambiguity" in r for r in case.reasons)


# --- planted inconsistencies ------------------------------------------------------------------


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    """A copy of te01's system folder (energy + performance siblings)."""
    if not TE01.is_dir():
        pytest.skip(f"published MLPerf logs not found at {LOGS}")
    root = tmp_path / "kws"
    shutil.copytree(TE01, root / "energy")
    shutil.copytree(TP01, root / "performance")
    return root


def test_deleted_timestamp_is_flagged_with_the_wrong_intervals(tiny_copy: Path) -> None:
    ts = tiny_copy / "energy" / "trace1-timestamps.json"
    times = json.loads(ts.read_text())
    del times[5]
    ts.write_text(json.dumps(times))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert "10 timestamps, expected 2W+1 = 11" in case.reasons[0]
    assert "paired in order the 10 timestamps would give 4 windows" in case.reasons[0]


def test_extra_window_in_results_is_flagged(tiny_copy: Path) -> None:
    results = tiny_copy / "energy" / "results.txt"
    text = results.read_text()
    block = text[text.index("00152.594 ulp-ml: Energy data for window 2"):]
    block = block[: block.index("uJ/inf.") + len("uJ/inf.")]
    results.write_text(text.replace(block, block + "\n" + block.replace("window 2 ", "window 12 ")))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert any("lists window(s) 12 that the 11 timestamps cannot produce" in r
               for r in case.reasons)


def test_printed_window_the_trace_cannot_give_is_flagged(tiny_copy: Path) -> None:
    results = tiny_copy / "energy" / "results.txt"
    results.write_text(results.read_text().replace("301266.371 uJ", "301566.371 uJ"))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert any(r.startswith("window 2: results.txt prints 301566.371 uJ but the trace gives")
               for r in case.reasons)


def test_edited_published_value_is_a_mismatch(tiny_copy: Path) -> None:
    results = tiny_copy / "energy" / "results.txt"
    results.write_text(results.read_text().replace("cost is 1004.221", "cost is 1010.221"))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "mismatch"
    assert case.published == 1010.221
    assert case.reasons[0].startswith("does not match published: derived 1004.22")


@pytest.mark.parametrize(("name", "why"), [
    ("trace1-energy.bin", "trace1-energy.bin: file not found"),
    ("log.txt", "log.txt: file not found"),
    ("results.txt", "missing or prints no median energy"),
])
def test_missing_file_is_flagged(tiny_copy: Path, name: str, why: str) -> None:
    (tiny_copy / "energy" / name).unlink()
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert any(why in r for r in case.reasons), case.reasons


def test_truncated_trace_is_flagged(tiny_copy: Path) -> None:
    bin_path = tiny_copy / "energy" / "trace1-energy.bin"
    bin_path.write_bytes(bin_path.read_bytes()[: 5 + 4 * 60_000])
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert "the trace is truncated" in case.reasons[0]


def test_window_shorter_than_performance_mode_measures_the_wrong_interval(
        tiny_copy: Path) -> None:
    perf = tiny_copy / "performance" / "results.txt"
    perf.write_text(perf.read_text().replace("Median throughput is 25.920",
                                             "Median throughput is 12.000"))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "flagged"
    assert any("inferences take 25.000 s in performance mode" in r
               and "measures the wrong interval" in r for r in case.reasons)


def test_energy_mode_simply_slower_is_no_false_alarm(tiny_copy: Path) -> None:
    """Energy firmware may run slower than performance firmware: windows twice as long as
    N x the performance latency are noted, not flagged."""
    perf = tiny_copy / "performance" / "results.txt"
    perf.write_text(perf.read_text().replace("Median throughput is 25.920",
                                             "Median throughput is 50.000"))
    case = rescore_case(tiny_copy / "energy")
    assert case.status == "match", case.reasons
    assert any(r.startswith("energy mode is +9") and "slower than performance mode" in r
               for r in case.reasons)


def test_perf_results_listing_windows_the_log_cannot_produce(tiny_copy: Path) -> None:
    log = tiny_copy / "performance" / "log.txt"
    lines = log.read_text().splitlines(keepends=True)
    infers = [i for i, line in enumerate(lines) if 'Command "dut infer' in line]
    log.write_text("".join(lines[: infers[1]]))  # only the first infer window survives
    case = rescore_case(tiny_copy / "performance")
    assert case.status == "flagged"
    assert any("1 window(s) measured, 5 required" in r for r in case.reasons)
    assert any("results.txt lists 5 windows but the log holds only 1" in r for r in case.reasons)


@pytest.fixture
def power_copy(tmp_path: Path) -> Path:
    if not POWER.is_dir():
        pytest.skip(f"published MLPerf logs not found at {LOGS}")
    folder = Path(shutil.copytree(POWER / "Offline", tmp_path / "v2.1" / "Offline"))
    (tmp_path / "CASES.md").write_text(
        "| case | folder | published | unit |\n|---|---|---|---|\n"
        "| pw03 | v2.1/Offline | 266.9385801 | W |\n"
    )
    return folder


def test_power_copy_matches_with_its_table(power_copy: Path) -> None:
    assert [c.status for c in rescore_tree(power_copy)] == ["match"]


def test_corrupt_spl_line_is_flagged(power_copy: Path) -> None:
    spl = power_copy / "run_1" / "spl.txt"
    lines = spl.read_text().splitlines()
    lines[5] = "Time,08-03-2022 garbage,Watts,1.0"
    spl.write_text("\n".join(lines) + "\n")
    [case] = rescore_tree(power_copy)
    assert case.status == "flagged"
    assert "spl.txt:6: not an spl.txt sample line" in case.reasons[0]


def test_missing_spl_is_flagged(power_copy: Path) -> None:
    (power_copy / "run_1" / "spl.txt").unlink()
    [case] = rescore_tree(power_copy)
    assert case.status == "flagged" and "spl.txt is missing" in case.reasons[0]


def test_edited_power_table_value_is_a_mismatch(power_copy: Path) -> None:
    table = power_copy.parents[1] / "CASES.md"
    table.write_text(table.read_text().replace("266.9385801", "255.0"))
    [case] = rescore_tree(power_copy)
    assert case.status == "mismatch" and "published 255" in case.reasons[0]


def test_power_without_published_value_is_unsupported(power_copy: Path, capsys) -> None:
    (power_copy.parents[1] / "CASES.md").unlink()
    [case] = rescore_tree(power_copy)
    assert case.status == "unsupported" and case.derived == pytest.approx(266.9385801)
    assert main(["rescore", str(power_copy)]) == 1


def test_nothing_to_rescore_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["rescore", str(tmp_path)]) == 2
    assert "no MLPerf Tiny, MLPerf power or tinypower session folders" in capsys.readouterr().err


# --- our own sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["energy", "performance"])
def test_session_rescores_to_its_stored_value(sessions: dict[str, Path], mode: str) -> None:
    stored = json.loads((sessions[mode] / "results.json").read_text())["record"]["value"]
    case = rescore_case(sessions[mode])
    assert case.kind == "tinypower_session" and case.status == "match", case.reasons
    assert case.derived == pytest.approx(stored, rel=1e-12)
    assert case.to_record().measured_as == "simulated"


def test_session_with_edited_result_is_flagged(sessions: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(sessions["energy"], tmp_path / "s"))
    results = json.loads((folder / "results.json").read_text())
    results["record"]["value"] *= 0.9
    (folder / "results.json").write_text(json.dumps(results))
    case = rescore_case(folder)
    assert case.status == "flagged"
    assert case.reasons[0] == (
        "results.json changed since the run (sha256 differs from session.json)")
