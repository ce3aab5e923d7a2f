"""`tinypower rescore`: every published case re-derived, every planted inconsistency flagged.

Fixtures: ``shared/mlperf-logs`` (its ``CASES.md`` lists each case with its published value);
skipped where absent. Faults are planted in tmp_path copies, never in the shared files. Our own
virtual-lab sessions must rescore to the value they stored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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


# --- whole trees: every folder reported, non-results skipped once --------------------------------


ORACLE_RUNNER = LOGS.parents[0] / "oracles" / "mlcommons-tiny" / "benchmark" / "runner"
TA03 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_L4R5ZI/ic/accuracy"
TA04 = LOGS / "tiny/v0.7/Andes/AndesCore_d25_tflite_micro_framework/vww/accuracy"
TA05 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U575ZI_Q/kws/accuracy"
TP17 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U575ZI_Q/sww/performance"
KRAI = LOGS / "power/v2.1/Krai/firefly-tflite-v2.7.1-ruy/resnet50"


def _need(path: Path) -> None:
    if not path.exists():
        why = f"{path} not found (shared fixtures absent)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def test_whole_shared_folder_reports_every_case_and_a_planted_unscorable_one(
        tmp_path: Path, capsys) -> None:
    """Every CASES.md case comes back matched from one walk of the whole folder, and a result
    folder with nothing readable in it is reported flagged (never dropped), with exit 1."""
    _need(CASES)
    root = Path(shutil.copytree(LOGS, tmp_path / "logs"))
    planted = root / "tiny/v1.1/Planted/BOARD/kws/performance"
    planted.mkdir(parents=True)
    (planted / "log.txt").write_bytes(b"\xff\xfe garbage \x1b[31m no laps\r\n")
    assert main(["rescore", str(root), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_path = {Path(line["path"]).resolve(): line for line in lines}
    for case_id, folder, published in case_rows():
        line = by_path[(root / folder).resolve()]
        assert line["status"] == "match", (case_id, line["reasons"])
        assert line["published"] == published
    assert by_path[planted.resolve()]["status"] == "flagged"
    assert len(lines) == len(case_rows()) + 1


def test_inference_tree_skips_non_power_folders_once_with_a_count(tmp_path: Path,
                                                                  capsys) -> None:
    _need(POWER)
    root = tmp_path / "inference_results_v2.1" / "closed" / "Dell" / "results" / "sys"
    shutil.copytree(POWER / "Offline", root / "resnet50" / "Offline" / "performance")
    for model in ("bert", "rnnt", "3d-unet"):  # results without power logs
        run_1 = root / model / "Offline" / "performance" / "run_1"
        run_1.mkdir(parents=True)
        (run_1 / "mlperf_log_detail.txt").write_text(":::MLLOG {\"key\": \"x\", \"value\": 1}\n")
        (root / model / "Offline" / "accuracy").mkdir()
        (root / model / "Offline" / "accuracy" / "mlperf_log_accuracy.json").write_text("[]")
    (root.parents[2] / "compliance" / "TEST01" / "performance" / "run_1").mkdir(parents=True)
    assert main(["rescore", str(tmp_path / "inference_results_v2.1"), "--json"]) == 1
    out = capsys.readouterr()
    [line] = [json.loads(x) for x in out.out.splitlines()]
    assert line["kind"] == "power" and line["status"] == "unsupported"  # no published table
    assert "checker rules of v2.1" in " ".join(line["reasons"])  # round from the repo name
    assert "skipped 3 folder(s): MLPerf Inference result without power logs" in out.err
    assert "skipped 3 folder(s): MLPerf Inference accuracy" in out.err
    assert "skipped 1 folder(s): compliance test folder" in out.err
    assert "spl.txt is missing" not in out.out


def test_result_folder_without_its_key_file_is_flagged_not_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "tiny" / "sys" / "kws" / "energy"
    folder.mkdir(parents=True)
    (folder / "._log.txt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    [case] = rescore_tree(tmp_path / "tiny")
    assert case.path == folder and case.status == "flagged"
    assert "without a readable results.txt, log.txt or results.json" in case.reasons[0]


def test_macos_resource_fork_is_not_read_as_the_log(tiny_copy: Path) -> None:
    (tiny_copy / "performance" / "._log.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    assert rescore_case(tiny_copy / "performance").status == "match"


def test_deep_tree_is_walked_without_recursion() -> None:
    # Outside pytest's tmp_path: its clean-up (shutil.rmtree) recurses and would fail on it.
    top = tempfile.mkdtemp(prefix="tinypower-deep-")
    deep = top
    try:
        for _ in range(1100):  # os.makedirs and Path.mkdir(parents=True) recurse themselves
            deep += "/d"
            os.mkdir(deep)
        Path(deep, "session.json").write_text("{")
        [case] = rescore_tree(Path(top))
        assert case.status == "flagged" and "session files unreadable" in case.reasons[0]
    finally:  # level by level, deepest first
        if os.path.exists(Path(deep, "session.json")):
            os.remove(Path(deep, "session.json"))
        while len(deep) >= len(top):
            if os.path.isdir(deep):
                os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_control_characters_in_names_are_escaped_in_the_table(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "evil\x1b]0;owned\x07" / "kws" / "performance"
    folder.mkdir(parents=True)
    (folder / "results.txt").write_text("Median throughput is 1.000 inf./sec.\n")
    assert main(["rescore", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err and "\x07" not in out.out + out.err
    assert "\\x1b" in out.out


# --- accuracy ---------------------------------------------------------------------------------


def _accuracy_copy(src: Path, tmp_path: Path) -> Path:
    _need(src)
    return Path(shutil.copytree(src, tmp_path / "ic" / "accuracy"))


def test_ic_labels_come_from_the_evaluation_list_not_the_name(tmp_path: Path) -> None:
    case = rescore_case(_accuracy_copy(TA03, tmp_path))
    assert case.status == "match" and case.derived == pytest.approx(85.0)
    assert "labels from ic01/y_labels.6dff252.csv" in case.reasons
    assert "170 of 200 files classified correctly" in case.reasons


def test_truncated_accuracy_log_is_flagged_incomplete_with_the_count(tmp_path: Path) -> None:
    folder = _accuracy_copy(TA03, tmp_path)
    log = folder / "log.txt"
    text = log.read_text()
    cut = [i for i in range(len(text)) if text.startswith('Command "bload', i)][23]
    log.write_text(text[:cut])
    case = rescore_case(folder)
    assert case.status == "flagged"
    assert case.reasons[0].startswith("incomplete: the run holds 23 of the 200 files")


def test_coco_prefixed_vww_names_find_their_labels(tmp_path: Path) -> None:
    _need(TA04)
    folder = Path(shutil.copytree(TA04, tmp_path / "vww" / "accuracy"))
    log = folder / "log.txt"
    log.write_bytes(log.read_bytes().replace(b"\\vww01\\0000", b"\\vww01\\COCO_val2014_0000"))
    case = rescore_case(folder)
    assert case.status == "match" and case.derived == pytest.approx(85.8), case.reasons


def test_unreadable_result_line_names_the_file_line_despite_lone_cr(tmp_path: Path) -> None:
    _need(TA04)
    folder = Path(shutil.copytree(TA04, tmp_path / "vww" / "accuracy"))
    log = folder / "log.txt"
    raw = log.read_bytes()
    at = raw.index(b"m-results-[0.027,0.973,]")
    lineno = raw[:at].count(b"\n") + 1
    log.write_bytes(raw[:at] + b"m-results-[0.027,zz,]" + raw[at + 24:])
    case = rescore_case(folder)
    assert case.status == "flagged"
    assert f"log.txt:{lineno}: m-results value 'zz'" in case.reasons[0]


def test_newrunner_accuracy_reads_results_json_and_checks_the_printed_auc(
        tmp_path: Path) -> None:
    _need(TA05)
    case = rescore_case(TA05)
    assert case.kind == "tiny_accuracy_newrunner" and case.status == "match"
    assert case.published == 90.2 and any("AUC 0.99" in r for r in case.reasons)
    folder = Path(shutil.copytree(TA05, tmp_path / "kws" / "accuracy"))
    results = folder / "results.txt"
    results.write_text(results.read_text().replace("AUC = 0.995", "AUC = 0.950"))
    case = rescore_case(folder)
    assert case.status == "flagged" and "prints AUC 0.950 but the outputs give 0.99" in \
        case.reasons[0]


def _ad_results(tmp_path: Path, scores: list[float], labels: list[int], auc: str) -> Path:
    """An MLCommons-runner AD accuracy folder: two segments per file, the runner's layout."""
    folder = tmp_path / "ad" / "accuracy"
    folder.mkdir(parents=True)
    from tinypower.results.labels import label_lists
    names = list(next(lst for lst in label_lists() if lst.name == "ad01/y_labels_alt.csv").labels)
    elements = []
    for name, score, label in zip(names, scores, labels, strict=False):
        for seg in (0.9, 1.1):
            elements.append({"file": name, "classes": "2", "class": str(label), "mode": "a",
                             "infer": {"results": [score * seg], "iterations": 1}})
    (folder / "results.json").write_text(json.dumps(elements))
    (folder / "results.txt").write_text(
        f"0813.204716 ulp-mlperf: Top 1% = {_runner_top1(scores[:72], labels[:72]):.1f}\n"
        f"0813.204716 ulp-mlperf: AUC = {auc}\n")
    return folder


def _runner_top1(scores: list[float], labels: list[int]) -> float:
    """The runner's AD "Top 1%", written out from its description: the best (precision +
    recall) / 2 over thresholds min + k/100 x (max - min), k = 0..99, in percent."""
    lo, hi = min(scores), max(scores)
    best = 0.0
    for k in range(100):
        t = lo + k / 100 * (hi - lo)
        tp = sum(s > t and y == 1 for s, y in zip(scores, labels, strict=True))
        fp = sum(s > t and y == 0 for s, y in zip(scores, labels, strict=True))
        fn = sum(s <= t and y == 1 for s, y in zip(scores, labels, strict=True))
        best = max(best, 100 * (tp / (tp + fp + 1e-8) + tp / (tp + fn + 1e-8)) / 2)
    return best


def test_anomaly_detection_auc_is_derived_and_compared(tmp_path: Path) -> None:
    scores = [0.1 * i for i in range(72)]
    labels = [int(i % 3 == 0 or i > 60) for i in range(72)]
    pairs = [(s1 > s0) + 0.5 * (s1 == s0) for s1, l1 in zip(scores, labels, strict=True) if l1
             for s0, l0 in zip(scores, labels, strict=True) if not l0]
    auc = sum(pairs) / len(pairs)  # the definition: P(anomaly scores above normal)
    case = rescore_case(_ad_results(tmp_path / "a", scores, labels, f"{auc:.3f}"))
    assert case.unit == "AUC" and case.status == "match", case.reasons
    assert case.derived == pytest.approx(auc)
    assert any("the runner's threshold 'Top 1%'" in r for r in case.reasons)
    bad = rescore_case(_ad_results(tmp_path / "b", scores, labels, f"{auc - 0.05:.3f}"))
    assert bad.status == "mismatch"
    folder = _ad_results(tmp_path / "c", scores, labels, f"{auc:.3f}")
    text = (folder / "results.txt").read_text()
    (folder / "results.txt").write_text(text.replace("Top 1% = ", "Top 1% = 1"))
    assert "results.txt prints Top 1% = 1" in rescore_case(folder).reasons[0]


# --- streaming wake word ------------------------------------------------------------------------


def test_sww_detection_counts_agree_with_the_mlcommons_runner(tmp_path: Path) -> None:
    """The runner's own calc_detection_stats, unmodified, on the published detections."""
    _need(TP17)
    if not ORACLE_RUNNER.is_dir():
        _need(ORACLE_RUNNER)
    import importlib.util
    import sys
    sys.path.insert(0, str(ORACLE_RUNNER))
    try:
        spec = importlib.util.spec_from_file_location(
            "streaming_ww_utils", ORACLE_RUNNER / "streaming_ww_utils.py")
        oracle = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(oracle)
    finally:
        sys.path.remove(str(ORACLE_RUNNER))
    from tinypower.results.tiny_logs import detection_stats, read_sww
    [run] = read_sww(TP17)
    tp, fn, fp = oracle.calc_detection_stats(run.detections_ms, run.windows_s)
    assert detection_stats(run.detections_ms, run.windows_s) == (len(tp), len(fn), len(fp))
    # Shifted detections make other counts; both must still agree.
    shifted = [run.detections_ms[0]] + [d + 1700 for d in run.detections_ms[1:]]
    tp, fn, fp = oracle.calc_detection_stats(shifted, run.windows_s)
    assert detection_stats(shifted, run.windows_s) == (len(tp), len(fn), len(fp))


def test_sww_printed_counts_that_the_detections_do_not_give_are_flagged(tmp_path: Path) -> None:
    _need(TP17)
    folder = Path(shutil.copytree(TP17, tmp_path / "sww" / "performance"))
    results = folder / "results.txt"
    results.write_text(results.read_text().replace("44 True positives", "46 True positives"))
    case = rescore_case(folder)
    assert case.status == "flagged" and "(46, 6, 4) (TP, FN, FP)" in case.reasons[0]


# --- power scenarios and rounds -----------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "unit"), [("multistream", "J/query"), ("offline", "W")])
def test_power_metric_follows_the_folder_scenario(scenario: str, unit: str) -> None:
    _need(KRAI)
    table = read_published_table(CASES)
    case = rescore_case(KRAI / scenario, table)
    assert case.status == "match" and case.unit == unit
    assert case.reasons[1].startswith(f"filed as {scenario.capitalize()[:5]}")


def test_power_round_from_repo_name_or_option_never_from_the_table_unit(
        tmp_path: Path) -> None:
    _need(POWER)
    folder = Path(shutil.copytree(POWER / "SingleStream",
                                  tmp_path / "inference_results_v2.1" / "SingleStream"))
    (tmp_path / "CASES.md").write_text(
        "| case | folder | published | unit |\n|---|---|---|---|\n"
        "| x | inference_results_v2.1/SingleStream | 0.2682116017 | W |\n")
    [case] = rescore_tree(folder)
    assert case.status == "match" and case.unit == "J/query"  # the W in the table changes nothing
    renamed = Path(shutil.copytree(folder, tmp_path / "results" / "SingleStream"))
    [case] = rescore_tree(renamed, round_=(3, 0))
    assert case.unit == "mJ/query" and case.derived == pytest.approx(268.2116017, rel=1e-9)


def test_summary_only_folder_is_unsupported_not_flagged(tmp_path: Path) -> None:
    _need(TP01)
    folder = tmp_path / "kws" / "performance"
    folder.mkdir(parents=True)
    shutil.copy(TP01 / "results.txt", folder)
    case = rescore_case(folder)
    assert case.status == "unsupported" and case.published == 25.92
    assert case.reasons[0].startswith("summary only")


def test_runner_folder_without_results_json_is_summary_only(tmp_path: Path) -> None:
    te10 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U385RG_Q/kws/energy"
    _need(te10)
    folder = Path(shutil.copytree(te10, tmp_path / "kws" / "energy"))
    (folder / "results.json").unlink()
    case = rescore_case(folder)
    assert case.status == "unsupported" and case.published == 245.3412
    assert case.reasons[0].startswith("summary only")


def test_sww_energy_is_the_streams_mean_power(tmp_path: Path) -> None:
    """One streamed file, one trial: published as ``Power : X mW`` (the runner's format)."""
    folder = tmp_path / "sww" / "energy"
    folder.mkdir(parents=True)
    samples = [2e-6] * 1000 + [1.2e-5] * 20_000 + [2e-6] * 1000  # J per 1 ms sample
    (folder / "results.json").write_text(json.dumps([{
        "infer": {"wav_file": "long_wav.wav", "detections": [96, 10000], "iterations": 1,
                  "detection_windows": [[9.0, 10.0]]},
        "power": {"samples": samples, "timestamps": [["00", 1000], ["01", 21000]]},
        "mode": "e"}]))
    total_uj = sum(samples[1000:21000]) * 1e6
    (folder / "results.txt").write_text(
        "Power Edition Output\nEnergy data for trial 0\n  Elapsed time  : 20.0\n"
        f"  Inferences    : 1\n  Power         : {total_uj * 1e-3 / 20:5.4f} mW.\n"
        f"  Total Energy  : {total_uj:.3f} uJ\n  Energy/Inf    : {total_uj:.3f} uJ/inf\n"
        f"Median energy cost is {total_uj:5.4f} uJ/inf.\n"
        "Accuracy: 1 True positives, 0 False negatives, 0 False positives\n")
    case = rescore_case(folder)
    assert case.kind == "tiny_sww_energy_newrunner" and case.unit == "mW"
    assert case.status == "match" and case.derived == pytest.approx(12.0), case.reasons
    (folder / "results.json").unlink()
    case = rescore_case(folder)
    assert case.status == "unsupported" and (case.published, case.unit) == (12.0, "mW")


def test_power_folder_without_its_runs_is_flagged_not_dropped(tmp_path: Path) -> None:
    _need(POWER)
    folder = tmp_path / "v2.1" / "sys" / "resnet50" / "Offline" / "performance"
    shutil.copytree(POWER / "Offline" / "power", folder / "power")
    [case] = rescore_tree(tmp_path)
    assert case.path == folder and case.kind == "power" and case.status == "flagged"
    assert "mlperf_log_detail.txt is missing" in case.reasons[0]


def test_log_without_results_txt_is_scored_against_the_table(tmp_path: Path) -> None:
    """Early rounds published ``performance_log.txt`` alone; the value is in the results table."""
    _need(TP01)
    folder = tmp_path / "v0.5" / "sys" / "kws" / "performance"
    folder.mkdir(parents=True)
    shutil.copy(TP01 / "log.txt", folder / "performance_log.txt")
    (tmp_path / "CASES.md").write_text(
        "| case | folder | published | unit |\n|---|---|---|---|\n"
        "| x | v0.5/sys/kws/performance | 25.920 | inf/s |\n")
    [case] = rescore_tree(folder)
    assert case.status == "match" and case.published == 25.92, case.reasons
    (tmp_path / "CASES.md").unlink()
    [case] = rescore_tree(folder)
    assert case.status == "flagged" and "prints no median" in case.reasons[0]


def test_postproc_only_accuracy_folder_is_summary_only(tmp_path: Path) -> None:
    folder = tmp_path / "ad" / "accuracy"
    folder.mkdir(parents=True)
    (folder / "postproc.txt").write_text("17071.335 ulp-mlperf: Top-1: 77.4%\n"
                                         "17071.345 ulp-mlperf: AUC: 0.86\n")
    [case] = rescore_tree(tmp_path)
    assert case.status == "unsupported" and (case.published, case.unit) == (0.86, "AUC")


def test_round_option_on_the_command_line(tmp_path: Path, capsys) -> None:
    _need(POWER)
    folder = Path(shutil.copytree(POWER / "SingleStream", tmp_path / "results" / "SingleStream"))
    assert main(["rescore", str(folder), "--round", "v3.0", "--json"]) == 1  # no table: unsupp.
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["unit"] == "mJ/query" and "checker rules of v3.0" in " ".join(line["reasons"])
    assert main(["rescore", str(folder), "--round", "latest"]) == 2
    err = capsys.readouterr().err
    assert "--round latest: expected a round such as v2.1" in err and "Traceback" not in err
