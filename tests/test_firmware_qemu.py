"""The benchmark firmware under QEMU: protocol, mode switching, results text, QEMU's lifetime,
and `tinypower measure --board qemu-an386` end to end through the real client and LPM01A driver.

The firmware is built with arm-none-eabi-gcc and run by qemu-system-arm (both installed by
.ci/run); without them these tests skip on a developer's machine and fail in CI (the `tools`
fixture, tests/conftest.py). The numbers
are the firmware's own: its timer under QEMU's instruction counter (icount shift 3 in
boards/qemu-an386.toml), deterministic, so windows and energies are checked against exact
physics (active current x voltage x window length) rather than tolerances picked to pass.

Test time: one full, valid, calibrated run per timed mode (kws01 performance and energy,
five windows of at least 10 s of firmware time, about 8 s of wall time each); ic01's timed
runs pass `iterations=2` (windows too short to be valid, which the result says); accuracy
runs one inference per input.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from energy_monitor.sim.event_line import EventLine, FirmwareClock
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from tinypower.boards import load_board
from tinypower.dut.emulated_lab import EmulatedLab
from tinypower.dut.protocol import DutClient, DutCommandError
from tinypower.dut.software_dut import SoftwareDut
from tinypower.emulator import Emulator, EmulatorConfig, EmulatorError, emulator_config
from tinypower.firmware import HARNESS_DIR, FirmwareBuildError, build_firmware
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import format_results, get_suite
from tinypower.suites.datasets import Dataset, Sample, synthetic_inputs
from tinypower.suites.model_info import read_model_info
from tinypower.suites.reference import ReferenceModel

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
BOARD = "qemu-an386"

needs_models = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"MLPerf Tiny reference models not found at {SHARED}"
)


@pytest.fixture(scope="module", autouse=True)
def firmware_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build images into a temporary cache, not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYPOWER_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def board():
    return load_board(BOARD)


def kws_synthetic() -> bytes:
    return resolve_model(get_suite("kws01"), "synthetic").data


def sample(suite: str) -> bytes:
    return (SHARED / "samples" / f"{suite}_sample0.bin").read_bytes()


# -- results text: the C formatting against Python's --------------------------------------


@pytest.fixture(scope="module")
def th_format() -> ctypes.CDLL:
    """firmware/harness/th_format.c built for the host."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: install a C compiler (apt-get install gcc)")
    out = Path(os.environ["TINYPOWER_CACHE"]) / "libth_format.so"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC",
                    str(HARNESS_DIR / "th_format.c"), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    lib.th_format_fixed3.argtypes = [ctypes.c_char_p, ctypes.c_double]
    lib.th_format_dequant3.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32,
                                       ctypes.c_float]
    return lib


def output_quantizations() -> list[tuple[float, int]]:
    """The output scale and zero point of every model the firmware may run, and hard cases."""
    models = [kws_synthetic()] + [p.read_bytes() for p in sorted(SHARED.glob("*.tflite"))]
    found = [ReferenceModel(m, get_suite("kws01")).output_q for m in models]
    hard = [(0.00390625, -128), (0.1, 0), (0.0005, 3), (1e-7, 0), (3.0, -5), (1e10, 7)]
    return [(float(np.float32(s)), zp) for s, zp in found + hard]


def test_results_text_matches_python_for_every_int8_output(th_format) -> None:
    buf = ctypes.create_string_buffer(400)
    checked = 0
    for scale, zp in output_quantizations():
        for q in range(-128, 128):
            th_format.th_format_dequant3(buf, q, zp, scale)
            assert buf.value.decode() == format_results(np.array([(q - zp) * scale])), (q, zp)
            checked += 1
    assert checked >= 256 * 8


def test_double_formatting_rounds_half_even_like_python(th_format) -> None:
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 0.0005, -0.0005, 0.0015, 0.0025, 1.0005, -1e-9, 2.0**70, 1e300,
              5e-324, float("inf"), -float("inf"), float("nan"), 0.125, 123456.7895]
    values += list(rng.uniform(-1, 1, 5000) * 2.0 ** rng.integers(-30, 40, 5000))
    values += [k / 2000 for k in range(-4000, 4000)]  # every exact half-thousandth tie
    buf = ctypes.create_string_buffer(400)
    for v in values:
        th_format.th_format_fixed3(buf, v)
        assert buf.value.decode() == f"{v:.3f}", v


# -- the event line, without QEMU ---------------------------------------------------------


def test_event_line_books_edges_and_currents_on_firmware_time() -> None:
    clock = FirmwareClock()
    timeline = LoadTimeline(clock, 0.001)
    line = EventLine(timeline, clock, 25e6, {0: 0.001, 1: 0.002, 2: 0.01})
    port = line.listen()
    wrap = 2**32
    with line, socket.create_connection(("127.0.0.1", port)) as conn:
        assert line.wait_connected(2)
        conn.sendall(f"T {wrap - 25_000_000}\nS2 {wrap - 100}\nP0 10\nP1 2510\n".encode())
        conn.sendall(b"S0 25000000\nT 50000000\n")
        deadline = time.monotonic() + 2
        while line.lines < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert line.error is None and line.lines == 6
        start = (wrap - 25_000_000) / 25e6  # the first line anchors the clock
        assert clock.now() == pytest.approx(start + 3.0)
        edges = timeline.edges_between(0, 1e9)
        tick = 1 / 25e6
        assert [(e.polarity, e.time_s - start) for e in edges] == [
            ("fall", pytest.approx(1 + 10 * tick, abs=1e-9)),
            ("rise", pytest.approx(1 + 2510 * tick, abs=1e-9))]
        # 10 mA from S2 (100 ticks before the counter wraps) to S0 at 2 s, 1 mA around it
        charge = timeline.charge_between(start + 1 - 200 * tick, start + 2 + 100 * tick)
        assert charge == pytest.approx(0.01 * (1 + 100 * tick) + 0.001 * 200 * tick, rel=1e-9)
        conn.sendall(b"X garbage\n")
        while line.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "unreadable line b'X garbage'" in line.error
    with pytest.raises(RuntimeError, match="set by the event line"):
        clock.advance(1.0)


# -- the harness against the software DUT -------------------------------------------------


def exchange(port: serial.Serial, command: bytes, timeout_s: float = 10.0) -> list[str]:
    """Raw bytes out, reply lines (CR/LF kept off, empty lines kept) up to m-ready."""
    port.write(command)
    data = b""
    deadline = time.monotonic() + timeout_s
    while not data.endswith(b"m-ready\r\n") and time.monotonic() < deadline:
        data += port.read(4096)
    assert data.endswith(b"m-ready\r\n"), (command, data)
    return data.decode("latin-1").split("\r\n")[:-1]


def synced(url: str) -> serial.Serial:
    """The port, past any boot banner: `name%` until a clean reply, then quiet."""
    port = serial.serial_for_url(url, timeout=0.05)
    for _ in range(20):
        port.reset_input_buffer()
        port.write(b"name%")
        data, deadline = b"", time.monotonic() + 0.5
        while not data.endswith(b"m-ready\r\n") and time.monotonic() < deadline:
            data += port.read(4096)
        if data.startswith(b"m-name-dut-[") and data.endswith(b"m-ready\r\n"):
            return port
    port.close()
    raise AssertionError(f"no clean reply to name% on {url}")


PROTOCOL_SCRIPT = [
    b"%", b"bogus%", b"  help  %", b"profile%", b"results%", b"infer%", b"infer 0%",
    b"infer 1 -1%", b"db%", b"db load%", b"db load 0%", b"db load -3%", b"db load 999999%",
    b"db 0011%", b"db print%", b"db load x12%", b"db load 20%", b"db print%", b"db 0%",
    b"db zz%", b"db 0102%", b"db 03ZZ%", b"db print%", b"infer 1 0%",
    b"db 0405060708090a0b0c0d0e0f101112131415161718191a1b1c1d%", b"db 00%", b"db print%",
    b"db LOAD%", b"x" * 81 + b"%", b"db\r\nload 3%", b"name \t%", b"db load\t20%",
    b"mode%", b"mode sleep%", b"mode performance%",
]


def software_dut(model: bytes) -> SoftwareDut:
    sim = load_board("sim-m4")
    return SoftwareDut(model=model, suite=get_suite("kws01"), board=sim,
                       timeline=LoadTimeline(VirtualClock(), 0.001), mode="performance",
                       macs=read_model_info(model).macs)


def test_harness_answers_every_command_like_the_software_dut(tools, board) -> None:
    model = kws_synthetic()
    data = synthetic_inputs(get_suite("kws01")).samples[0].data
    load = [b"db load 490%"] + [f"db {data[i:i + 31].hex()}%".encode()
                                 for i in range(0, 490, 31)]
    script = PROTOCOL_SCRIPT + load + [b"db print%", b"infer 2 1%", b"results%", b"infer 1%"]
    replies = {}
    with software_dut(model) as soft, EmulatedLab(board=board, suite=get_suite("kws01"),
                                                  model=model) as lab:
        for name, url in (("software", soft.start()), ("firmware", lab.dut_url)):
            with synced(url) as port:
                replies[name] = [exchange(port, cmd) for cmd in script]
    for cmd, soft_lines, fw_lines in zip(script, replies["software"], replies["firmware"],
                                         strict=True):
        if cmd.startswith(b"name"):
            assert soft_lines == ["m-name-dut-[tinypowersim-software-dut]", "m-ready"]
            assert fw_lines == ["m-name-dut-[tinypower-qemu-an386]", "m-ready"]
            continue
        laps = re.compile(r"^m-lap-us-\d+$")
        assert [laps.sub("m-lap-us-N", x) for x in fw_lines] == [
            laps.sub("m-lap-us-N", x) for x in soft_lines], cmd
    by_cmd = dict(zip(script, replies["firmware"], strict=False))
    assert by_cmd[b"db load 999999%"][0] == "Supplied buffer size 999999 exceeds maximum of 490"
    assert by_cmd[b"x" * 81 + b"%"][0].startswith("e-[Command too long")
    assert by_cmd[b"infer 1 0%"][0] == (
        "e-[Input buffer holds 3 bytes, kws01 needs 490: send db load 490 and db first]")
    assert by_cmd[b"db print%"][-2:] == ["", "m-ready"]  # 20 bytes: an odd-sized buffer


# -- mode switching -----------------------------------------------------------------------


def test_mode_switches_timestamps_at_run_time(tools, board) -> None:
    suite = get_suite("kws01")
    data = synthetic_inputs(suite).samples[0].data
    with EmulatedLab(board=board, suite=suite, model=kws_synthetic()) as lab, \
            DutClient(lab.dut_url) as dut:
        dut.sync()
        assert dut.command("mode") == ["m-mode-[performance]"]
        assert dut.timestamp() is not None  # an m-lap-us- line
        edges_before = len(lab.timeline.edges_between(0, 1e9))
        assert dut.command("mode energy") == ["m-mode-[energy]"]
        assert dut.timestamp() is None  # a pin pulse instead
        dut.load(data)
        reply = dut.infer(3, 1)
        assert reply.laps_us == []
        deadline = time.monotonic() + 5
        while len(lab.timeline.edges_between(0, 1e9)) < edges_before + 6:
            assert time.monotonic() < deadline, "the event line did not report 3 pulses"
            time.sleep(0.01)
        edges = lab.timeline.edges_between(0, 1e9)[edges_before:]
        assert [e.polarity for e in edges] == ["fall", "rise"] * 3
        holds = [rise.time_s - fall.time_s for fall, rise in zip(edges[::2], edges[1::2],
                                                                 strict=True)]
        assert all(100e-6 <= h < 110e-6 for h in holds)  # TH_TIMESTAMP_HOLD_US plus the report
        window_s = edges[4].time_s - edges[2].time_s
        assert dut.command("mode performance") == ["m-mode-[performance]"]
        perf = dut.infer(3, 1)
        lap_s = (perf.laps_us[1] - perf.laps_us[0]) / 1e6
        # Same work between the stamps; the energy window also holds one pin pulse.
        assert window_s - lap_s == pytest.approx(holds[1], abs=20e-6)
        assert perf.results_payload == reply.results_payload
        with pytest.raises(DutCommandError, match="Unknown mode 'fast'"):
            dut.command("mode fast")


# -- QEMU's lifetime ----------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_dead(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def kws_elf(tools, board) -> Path:
    return build_firmware(board, get_suite("kws01"), kws_synthetic()).elf


def test_qemu_is_killed_on_close_and_on_an_exception(kws_elf, board) -> None:
    config = emulator_config(board)
    with Emulator(kws_elf, config) as emulator:
        emulator.start()
        pid = emulator.pid
        assert alive(pid) and os.getpgid(pid) == pid  # its own process group
    assert not alive(pid)
    with pytest.raises(ZeroDivisionError), Emulator(kws_elf, config) as emulator:
        emulator.start()
        pid = emulator.pid
        _ = 1 / 0
    assert not alive(pid)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tinypower.boards import load_board
    from tinypower.emulator import Emulator, emulator_config
    emulator = Emulator(Path(sys.argv[1]), emulator_config(load_board("qemu-an386")))
    emulator.start()
    print(emulator.pid, flush=True)
    if sys.argv[2] == "raise":
        raise RuntimeError("the runner crashed")
    time.sleep(60)
""")


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_qemu_dies_with_a_crashed_runner(kws_elf, how) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(kws_elf), how],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pid = int(child.stdout.readline())
        if how == "sigkill":
            assert alive(pid)
            child.send_signal(signal.SIGKILL)  # no finally, no atexit: the kernel's job
        child.wait(10)
        assert wait_dead(pid), f"QEMU {pid} outlived its runner ({how})"
    finally:
        child.kill()
        child.wait()


def test_qemu_that_cannot_start_says_why(kws_elf) -> None:
    broken = EmulatorConfig("no-such-machine", 3, 25_000_000)
    with pytest.raises(EmulatorError, match="QEMU did not start: QEMU exited with status 1.*"
                       "unsupported machine type"):
        Emulator(kws_elf, broken).start()


def test_model_that_does_not_fit_the_suite_is_refused(tools, board) -> None:
    with pytest.raises(FirmwareBuildError, match="input size does not match"):
        build_firmware(board, get_suite("ic01"), kws_synthetic())


# -- tinypower measure --board qemu-an386 ----------------------------------------------------


def reference_request(tmp_path: Path, suite_name: str, mode: str, **kw) -> RunRequest:
    suite = get_suite(suite_name)
    data = kw.pop("data", None) or sample(suite_name)
    dataset = Dataset("files", [Sample(f"{suite_name}_sample0.bin", data, None)], 1)
    model = resolve_model(suite, str(SHARED / suite.reference_model))
    return RunRequest(board=load_board(BOARD), suite=suite, model=model, dataset=dataset,
                      mode=mode, runs_dir=tmp_path, **kw)


@needs_models
@pytest.mark.parametrize("suite_name", ["kws01", "ic01", "ad01"])
def test_accuracy_agrees_with_the_host_reference(tools, tmp_path, suite_name) -> None:
    data = None
    if suite_name == "ad01":  # the first 3 of the file's 196 windows (float32 in, MSE out)
        data = (SHARED / "samples" / "ad01_normal_id_01_00000000_hist_librosa.bin").read_bytes()
        data = data[: 2560 + 2 * 512]
    outcome = run(reference_request(tmp_path, suite_name, "accuracy", data=data))
    assert outcome.error is None and outcome.ok
    assert outcome.measured_as == "emulated"
    assert outcome.result.metric == "reference_agreement" and outcome.result.value == 100.0
    assert outcome.result.extras["inferences"] == (3 if suite_name == "ad01" else 1)


@needs_models
def test_performance_is_valid_and_timed_by_the_firmware(tools, tmp_path) -> None:
    outcome = run(reference_request(tmp_path, "kws01", "performance"))
    assert outcome.error is None and outcome.ok, outcome.result.failures
    result = outcome.result
    n = result.extras["iterations"]
    elapsed = [w["elapsed_s"] for w in result.windows]
    assert len(elapsed) == 5 and min(elapsed) >= 10.0
    # Deterministic under icount: the windows differ only by the heartbeat interrupts (every
    # 100 ms of firmware time, each a few µs) that happen to land in them: well under 100 ppm.
    assert max(elapsed) - min(elapsed) < 1e-4 * min(elapsed)
    latency_ms = result.extras["latency_ms"]
    assert latency_ms == pytest.approx(1000 * elapsed[0] / n, rel=1e-5)
    # kws: 2.66 M MACs at 1 to 19 instructions each (2.5 to 3.7 measured by
    # benchmarks/bench_firmware.py), 8 ns per instruction
    assert 20 < latency_ms < 400
    assert outcome.measured_as == "emulated"
    session = outcome.session.folder
    assert '"icount_shift": 3' in (session / "session.json").read_text()
    assert "> mode performance%" in (session / "transcript.log").read_text()


@needs_models
def test_energy_windows_come_from_the_firmware_pin_through_the_lpm01a(tools, tmp_path) -> None:
    board = load_board(BOARD)
    outcome = run(reference_request(tmp_path, "kws01", "energy"))
    assert outcome.error is None and outcome.ok, outcome.result.failures
    result = outcome.result
    n = result.extras["iterations"]
    power_w = board.energy_model.active_current_a * board.monitor_voltage_v
    period_s = 1 / board.monitor_sample_rate_hz
    for w in result.windows:
        assert w["duration_s"] >= 10.0
        # Active between the edges: energy = P x duration, to within one sample period.
        assert w["energy_uj"] == pytest.approx(power_w * w["duration_s"] * 1e6,
                                               abs=power_w * period_s * 1e6)
    per_inference_s = result.windows[0]["duration_s"] / n
    assert result.value == pytest.approx(power_w * per_inference_s * 1e6, rel=2e-3)
    session = outcome.session.folder
    transcript = (session / "transcript.log").read_text()
    assert "> mode energy%" in transcript and "> [lpm01a] eventsrc d7 fal" in transcript
    assert "m-lap-us-" not in transcript.split("mode energy%")[1]
    raw = b"".join(p.read_bytes() for p in session.glob("*raw*"))
    assert raw.count(b"event") >= 12  # 6 infers x 2 falling edges, as the LPM01A streams them


@needs_models
@pytest.mark.parametrize("mode", ["performance", "energy"])
def test_ic01_short_windows_measure_but_are_invalid(tools, tmp_path, mode) -> None:
    outcome = run(reference_request(tmp_path, "ic01", mode, iterations=2, warmups=0))
    assert outcome.error is None and not outcome.ok
    result = outcome.result
    assert result.extras["iterations"] == 2 and len(result.windows) == 5
    assert {c.message.split(" lasted")[0] for c in result.failures
            if c.rule.startswith("tiny.window_length")} == {f"window {k}" for k in range(5)}
    # and 2 inferences per window is below EEMBC's minimum of 10
    assert {c.rule for c in result.failures if c.rule.startswith("tiny.inferences")} == {
        f"tiny.inferences[{k}]" for k in range(5)}
    if mode == "performance":
        latency_s = result.extras["latency_ms"] / 1000
    else:
        latency_s = result.windows[0]["duration_s"] / 2
    assert 0.05 < latency_s < 3.0  # 12.5 M MACs at 0.5 to 30 instructions, 8 ns each
