"""Published MLPerf Tiny results re-derived by our own rules code.

Why: if ``tinypower.rules.tiny`` reproduces the numbers MLCommons published, from the raw files
beside them, the rules that score our runs are the runners' rules. The fault tests make sure the
readers refuse, loudly, the damage that would otherwise shift a score silently (a lost timestamp,
a truncated trace). Fixtures: ``shared/mlperf-logs`` (see its ``CASES.md``); skipped if absent.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tinypower.results.tiny_logs import (
    LogFormatError,
    published_value,
    read_eembc_energy,
    read_eembc_performance,
    read_mlcommons_energy,
    read_mlcommons_performance,
    score_published,
)
from tinypower.rules.tiny import score_energy

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
TE01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/energy"
TE10 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U385RG_Q/kws/energy"
TE13 = LOGS / "tiny/v0.7/renesas/EK-RA6M4/kws/energy"
TP01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/performance"
TP13 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U385RG_Q/kws/performance"

# The (j0, j1) offsets that reproduce te01's five printed windows (published-logs.md section 3).
TE01_OFFSETS = [(1, 1), (1, 0), (0, 1), (1, 1), (1, 1)]

pytestmark = pytest.mark.skipif(
    not LOGS.is_dir(), reason=f"published MLPerf logs not found at {LOGS} (shared fixtures absent)"
)


def printed(folder: Path, pattern: str) -> list[str]:
    """Every value ``results.txt`` prints for one field, as text (to compare at its precision)."""
    return re.findall(pattern, (folder / "results.txt").read_text())


@pytest.mark.parametrize(
    ("folder", "published", "fmt", "unit", "source"),
    [
        pytest.param(TE01, 1004.221, "%.3f", "uJ/inf", "eembc-energy", id="te01"),
        pytest.param(TE10, 245.3412, "%5.4f", "uJ/inf", "mlcommons-energy", id="te10"),
        pytest.param(TP01, 25.920, "%.3f", "inf/s", "eembc-performance", id="tp01"),
        pytest.param(TP13, 20.703, "%10.3f", "inf/s", "mlcommons-performance", id="tp13"),
    ],
)
def test_published_score_rederived(
    folder: Path, published: float, fmt: str, unit: str, source: str
) -> None:
    result = score_published(folder)
    assert result.extras["source"] == source
    assert result.unit == unit
    assert result.valid, result.failures
    assert published_value(folder) == (published, unit)
    assert abs(result.value - published) <= 1e-4 * published
    assert fmt % result.value == fmt % published
    # The runner's own line, character for character (padding included).
    assert (
        f"is {fmt % result.value} {'uJ/inf' if unit == 'uJ/inf' else 'inf./sec'}."
        in (folder / "results.txt").read_text()
    )


def test_te01_windows_match_printed_with_documented_offsets() -> None:
    run = read_eembc_energy(TE01, offsets=TE01_OFFSETS)
    energies = run.energies()
    assert [w.window.label for w in energies] == ["2", "4", "6", "8", "10"]
    printed_uj = [float(v) for v in printed(TE01, r"Energy\s+:\s+([\d.]+) uJ")]
    printed_power = [float(v) for v in printed(TE01, r"Power\s+:\s+([\d.]+) uW")]
    printed_per_inf = printed(TE01, r"Energy/Inf\.\s+:\s+([\d.]+) uJ/inf")
    assert len(printed_uj) == len(energies) == 5
    for w, e_uj, p_uw, ei in zip(energies, printed_uj, printed_power, printed_per_inf, strict=True):
        assert abs(w.energy_j * 1e6 - e_uj) <= 0.005
        assert abs(w.mean_power_w * 1e6 - p_uw) <= 0.005
        assert f"{w.energy_per_work_j * 1e6:.3f}" == ei
    assert f"{score_energy(energies).value:.3f}" == "1004.221"


def test_te01_default_rule_within_one_sample_per_edge() -> None:
    run = read_eembc_energy(TE01)
    edge_bound_uj = 2 * run.trace.energy_j.max() * 1e6
    printed_uj = [float(v) for v in printed(TE01, r"Energy\s+:\s+([\d.]+) uJ")]
    for w, e_uj in zip(run.energies(), printed_uj, strict=True):
        assert w.window.alignment_bound_s == pytest.approx(1e-3)
        assert abs(w.energy_j * 1e6 - e_uj) <= edge_bound_uj
    first = run.windows[0]  # worked example: samples 2740..14229 inclusive
    assert (first.start_index, first.end_index, first.work_count) == (2740, 14230, 300)


def test_te10_trials_match_printed() -> None:
    run = read_mlcommons_energy(TE10)
    energies = run.energies()
    total_uj = [float(v) for v in printed(TE10, r"Total Energy\s+:\s+([\d.]+) uJ")]
    elapsed = [float(v) for v in printed(TE10, r"Elapsed time\s+:\s+([\d.]+)")]
    power_mw = printed(TE10, r"Power\s+:\s+([\d.]+) mW")
    assert len(energies) == len(total_uj) == 5
    assert (run.windows[1].start_index, run.windows[1].end_index) == (1803, 13859)
    for w, e_uj, t_s, p_mw in zip(energies, total_uj, elapsed, power_mw, strict=True):
        assert abs(w.energy_j * 1e6 - e_uj) <= 0.0005 + 1e-9
        assert w.duration_s == pytest.approx(t_s, abs=1e-12)
        assert f"{w.mean_power_w * 1e3:.4f}" == p_mw


def test_tp01_windows_and_latency_match_printed() -> None:
    windows = read_eembc_performance(TP01)
    assert (windows[0].start_us, windows[0].end_us) == (17646104, 29221213)
    assert [f"{w.throughput:.3f}" for w in windows] == printed(
        TP01, r"Throughput\s+:\s+([\d.]+) inf\./sec"
    )
    assert [f"{w.elapsed_s:.3f}" for w in windows] == printed(TP01, r"Runtime\s+:\s+([\d.]+) sec")
    published = float(f"{score_published(TP01).value:.3f}")
    assert 1000 / published == pytest.approx(38.58024691, abs=1e-8)


def test_tp13_windows_match_printed_repr() -> None:
    windows = read_mlcommons_performance(TP13)
    assert [repr(w.throughput) for w in windows] == printed(TP13, r"Throughput: ([\d.]+) inf\./sec")


def test_summary_only_folder_is_refused() -> None:
    with pytest.raises(LogFormatError, match="summary only: no raw trace to re-derive from"):
        score_published(TE13)


# --- planted faults, each in a tmp_path copy ------------------------------------------------


@pytest.fixture
def te01_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TE01, tmp_path / "energy"))


def test_lost_timestamp_is_reported_not_paired(te01_copy: Path) -> None:
    ts_path = te01_copy / "trace1-timestamps.json"
    timestamps = json.loads(ts_path.read_text())
    del timestamps[5]
    ts_path.write_text(json.dumps(timestamps))
    with pytest.raises(LogFormatError, match=r"trace1-timestamps\.json: 10 timestamps, expected"):
        score_published(te01_copy)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        pytest.param(lambda b: b[:-2], "not a whole number of float32 samples", id="cut-mid"),
        pytest.param(lambda b: b[: 5 + 4 * 60_000], "the trace is truncated", id="cut-samples"),
        pytest.param(lambda b: b"\x00" + b[1:], "header byte 0x00, expected 0xF1", id="magic"),
        pytest.param(lambda b: b[:3], "shorter than the 5-byte header", id="no-header"),
        pytest.param(lambda b: b"\xf1\x00\x00\x00\x00" + b[5:], "not positive", id="rate"),
    ],
)
def test_damaged_bin_names_the_file(te01_copy: Path, damage, why: str) -> None:
    bin_path = te01_copy / "trace1-energy.bin"
    bin_path.write_bytes(damage(bin_path.read_bytes()))
    with pytest.raises(LogFormatError, match="trace1-energy.bin") as caught:
        read_eembc_energy(te01_copy)
    assert why in str(caught.value)


def test_inference_count_from_iter_infer_when_no_infer_command(te01_copy: Path) -> None:
    log = te01_copy / "log.txt"
    log.write_text(log.read_text().replace('Command "io dut infer 300 1"', "Command"))
    run = read_eembc_energy(te01_copy)
    assert [w.work_count for w in run.windows] == [300] * 5
    assert f"{run.score().value:.3f}" == "1004.221"


def test_offsets_must_cover_every_window() -> None:
    with pytest.raises(ValueError, match="5 \\(j0, j1\\) pairs"):
        read_eembc_energy(TE01, offsets=TE01_OFFSETS[:4])


def test_mlcommons_uses_last_two_events_and_refuses_one(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(TE10, tmp_path / "energy"))
    path = folder / "results.json"
    trials = json.loads(path.read_text())
    trials[0]["power"]["timestamps"].insert(0, ["xx", 10])  # a stray edge before the window
    path.write_text(json.dumps(trials))
    assert f"{score_published(folder).value:5.4f}" == "245.3412"
    trials[2]["power"]["timestamps"] = trials[2]["power"]["timestamps"][-1:]
    path.write_text(json.dumps(trials))
    with pytest.raises(LogFormatError, match=r"results\.json: trial 2: .*1 timestamp edge"):
        score_published(folder)


def test_infer_without_lap_pair_is_refused(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(TP01, tmp_path / "performance"))
    log = folder / "log.txt"
    log.write_text(log.read_text().replace("dut: m-lap-us-41003480\n", ""))
    with pytest.raises(LogFormatError, match=r"log\.txt: infer command 2 is followed by 1 lap"):
        read_eembc_performance(folder)


def test_folder_without_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="not an MLPerf Tiny"):
        score_published(tmp_path)
