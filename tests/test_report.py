"""`tinypower report`: one self-contained HTML file for three real virtual-lab sessions and one
power session of the scaling layer (`tinypower measure --sut FILE --quick`), rendered
in headless Chromium (Debian's `chromium`, installed by .ci/run). The test checks the page loads
without console errors, shows every section, embeds only data: images, stays under 5 MB, and
saves a screenshot whose path it prints (tests/artifacts/, kept by CI)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from director_session import quick_director_session
from matplotlib import image as mpimg

from tinypower.boards import boards_dir
from tinypower.cli import main
from tinypower.report.html import SECTION_IDS, ReportError, render_report
from tinypower.report.plot import Point, pareto_front
from tinypower.report.published import PUBLISHED

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CASES = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs" / "CASES.md"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
)


def _board_variant(tmp: Path, name: str, clock_hz: int, active_a: float) -> Path:
    """A copy of the virtual lab's board at another clock and current: another design point."""
    text = (boards_dir() / "sim-m4.toml").read_text()
    text = text.replace('name = "sim-m4"', f'name = "{name}"', 1)
    text = re.sub(r"(?m)^clock_hz = .*$", f"clock_hz = {clock_hz}", text, count=1)
    text = re.sub(r"(?m)^active_current_a = [0-9.]+", f"active_current_a = {active_a}", text,
                  count=1)
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> list[Path]:
    """Three energy sessions of kws01 on three virtual boards, plus the first one's performance
    session (which gives its latency)."""
    tmp = tmp_path_factory.mktemp("report")
    runs = tmp / "runs"
    boards = ["sim-m4", str(_board_variant(tmp, "sim-m4-fast", 240_000_000, 0.016)),
              str(_board_variant(tmp, "sim-m4-slow", 48_000_000, 0.005))]
    for i, board in enumerate(boards):
        mode = "performance,energy" if i == 0 else "energy"
        assert main(["measure", "--board", board, "--mode", mode,
                     "--runs-dir", str(runs / str(i))]) == 0
    # Performance first: the report numbers runs in command-line order (#1 .. #4).
    folders = [f for f in runs.glob("*/*") if f.is_dir()]  # beside them: results.sqlite
    return sorted(folders, key=lambda f: (f.parent.name, "energy" in f.name))


@pytest.fixture(scope="module")
def power_session(tmp_path_factory) -> Path:
    """A quick director session: the real director, client, LoadGen and PTDaemon simulator."""
    return quick_director_session(tmp_path_factory.mktemp("power"))


@pytest.fixture(scope="module")
def report(sessions, power_session, tmp_path_factory) -> Path:
    """The report of those sessions (the power session last, #5), made once by the command a
    user types."""
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", *map(str, sessions), str(power_session), "--out", str(out)]) == 0
    return out


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium not found: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must have it (.ci/run installs it)")
        pytest.skip(message)
    return found


def _run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_report_of_three_sessions_renders_in_headless_chromium(
    sessions, report, tmp_path, capsys
) -> None:
    chromium = _chromium()
    assert [s.name.rsplit("-", 1)[1] for s in sessions] == [
        "performance", "energy", "energy", "energy"]
    out = report
    text = out.read_text()
    assert out.stat().st_size < 5 * 1024 * 1024
    # Self-contained: no scripts, no stylesheets or images from anywhere but data: URIs.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", text)
    assert "http://" not in text and "https://" not in text
    # Every embedded plot is a PNG that decodes: 3 traces + 3 zoom strips + the power
    # session's ranging and testing readings + Pareto + scales.
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(pngs) == 9
    for data in pngs:
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    # Simulated numbers say so.
    assert "These numbers were not measured on hardware" in text
    assert text.count("SIMULATED") >= 3 * 4

    dom = _run_chromium(chromium, tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    consoles = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not consoles, consoles
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in dom.stdout, section
    for number in (2, 3, 4):  # the energy sessions: one trace each
        assert f'id="trace-{number}"' in dom.stdout
    assert 'id="power-5"' in dom.stdout and "#5 edge-box" in dom.stdout
    for name in ("sim-m4-fast", "sim-m4-slow", "te10", "pw03"):
        assert name in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-four-sessions.png"
    screenshot.unlink(missing_ok=True)
    shot = _run_chromium(chromium, tmp_path, f"--screenshot={screenshot}",
                         "--window-size=1280,5000", out.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert mpimg.imread(screenshot).shape[:2] == (5000, 1280)
    with capsys.disabled():
        print(f"\nreport screenshot: {screenshot}")


def test_report_rows_say_where_each_number_came_from(sessions, report) -> None:
    text = report.read_text()
    # The board that gave a performance session takes its latency from it; the others from
    # their energy windows.
    assert text.count("performance session #1") == 1
    assert text.count("energy windows (duration / N)") == 2
    windows = json.loads((sessions[1] / "results.json").read_text())["windows"]
    assert f"{windows[0]['energy_uj']:.3f}" in text


def test_power_session_shows_its_phases_and_joins_the_scales_plot(power_session, report) -> None:
    text = report.read_text()
    results = json.loads((power_session / "results.json").read_text())
    power = text[text.index('<section id="power">'):text.index('<section id="windows">')]
    for phase in ("ranging", "testing"):
        m = results["phases"][phase]["ptd"]
        row = (f"<td>{phase}</td><td>SingleStream</td><td>{m['value']:.4g} mJ/query</td>"
               f"<td>{m['average_power_w']:.3f}</td><td>{m['samples_in_window']}</td>")
        assert row in power, phase
    assert "ranging_power (validity)" in power and "run_length (compliance)" in power
    assert "LoadGen window 3.0 s (MLPerf needs at least 600 s)" in power
    scales = text[text.index('<section id="scales">'):text.index('<section id="scaleout">')]
    assert scales.count("<img") == 1
    summary = text[text.index('<section id="summary">'):text.index('<section id="traces">')]
    # the value with its expanded uncertainty (PTDaemon's reported uncertainty and the skew)
    assert f"{results['testing']['value']:.4g} ± " in summary and "mJ/query (k=2)" in summary


def test_bad_input_gives_clear_errors(sessions, tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "no session.json" in capsys.readouterr().err
    perf = sessions[0]
    assert perf.name.endswith("-performance")
    with pytest.raises(ReportError, match="none of the sessions has a power trace"):
        render_report([perf])
    broken = shutil.copytree(sessions[1], tmp_path / "no-trace")
    (broken / "trace.npz").unlink()
    assert main(["report", str(broken), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "has no trace.npz" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [Point("a", 10, 5), Point("b", 20, 2), Point("c", 25, 6), Point("d", 5, 9)]
    assert [p.label for p in pareto_front(points)] == ["d", "a", "b"]


def test_published_table_matches_the_cases_it_cites() -> None:
    for p in PUBLISHED:
        per_unit = {"uJ/inf": p.value * 1e-6, "J/query": p.value}.get(p.unit)
        if per_unit is not None:
            assert p.energy_per_work_j == pytest.approx(per_unit)
        else:  # Offline: watts over samples per second
            assert p.unit == "W" and p.energy_per_work_j == pytest.approx(p.value / 3091.84)
    if not CASES.is_file():
        pytest.skip(f"{CASES} absent: published values not cross-checked")
    rows = {cells[1]: cells for line in CASES.read_text().splitlines()
            if (cells := [c.strip() for c in line.split("|")]) and len(cells) > 8}
    for p in PUBLISHED:
        row = rows[p.case]
        assert float(row[4]) == p.value, p.case
        assert (row[6], row[7]) == (p.repository, p.path), p.case
