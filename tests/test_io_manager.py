"""The DUT through an IO manager: the real client over pyserial, against the simulated Arduino IO
manager and MLCommons interface board, which relay to the software DUT on its own pty.

Every board command of both kinds, every DUT command through the passthrough (a whole ``db``
download in 26-byte chunks with its read-back, and ``infer`` with the host reference's results),
``setbaud`` only when the baud differs, the fault paths (a missing header, a silent DUT,
unsolicited output, a fractured command, replies out of step) with the errors a user sees, and
one full energy-mode measurement through the Arduino path, scored as without it.
"""

from __future__ import annotations

import os
import re
import select
import threading
import tty
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from tinypower.boards import Board, load_board
from tinypower.dut.io_manager import (
    MLCOMMONS_BOARD_NAME,
    DutSilentError,
    FracturedMessageError,
    IoManagerClient,
    IoManagerError,
    PassthroughHeaderError,
)
from tinypower.dut.io_manager_sim import (
    ARDUINO_HELP,
    ARDUINO_NAME,
    IoManagerFaults,
    IoManagerSimulator,
)
from tinypower.dut.protocol import DutCommandError
from tinypower.dut.software_dut import HELP_LINES, SoftwareDut
from tinypower.dut.transcript import Transcript
from tinypower.models import resolve_model
from tinypower.runner import RunError, RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs
from tinypower.suites.reference import ReferenceModel

SUITE = get_suite("kws01")
MODEL = resolve_model(SUITE, "synthetic")
INPUT = synthetic_inputs(SUITE).samples[0].data
KINDS = ("arduino", "mlcommons")


@dataclass
class Lab:
    client: IoManagerClient
    sim: IoManagerSimulator
    timeline: LoadTimeline
    board: Board
    transcript: Transcript

    def sent(self) -> list[str]:
        return [text for _, d, text in self.transcript.lines if d == ">"]


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """An energy-mode software DUT behind a started IO manager simulator, with a client open on
    the simulator's pty (synced unless ``sync=False``)."""
    with ExitStack() as stack:

        def make(kind: str, *, client_kind: str | None = None, sync: bool = True,
                 d3_wired: bool = False, **sim_options: object) -> Lab:
            board = load_board("sim-m4")
            assert board.energy_model is not None
            timeline = LoadTimeline(VirtualClock(), board.energy_model.idle_current_a)
            dut = stack.enter_context(SoftwareDut(
                model=MODEL.data, suite=SUITE, board=board, timeline=timeline, mode="energy",
                macs=MODEL.info.macs,
            ))
            if d3_wired:  # the timestamp pin also goes to the Arduino's D3
                sim_options["timeline"] = timeline
            dut_url = dut.start()
            _read_boot_banner(dut_url)  # so that no test depends on when the DUT booted
            sim = stack.enter_context(IoManagerSimulator(dut_url, kind, **sim_options))
            transcript = Transcript()
            client = stack.enter_context(
                IoManagerClient(sim.start(), client_kind or kind, transcript=transcript)
            )
            if sync:
                client.sync(timeout_s=5)
            return Lab(client, sim, timeline, board, transcript)

        yield make


# -- the DUT through the board ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_dut_command_passes_through(make_lab: Callable[..., Lab], kind: str) -> None:
    lab = make_lab(kind)
    client = lab.client
    assert client.name() == "tinypowersim-software-dut"
    assert client.profile() == ("ULPMark for tinyML Firmware V0.0.1", "kws01")
    before = len(lab.timeline.edges_between(0, 1e9))
    assert client.timestamp() is None  # energy mode: a pin pulse, no lap line
    assert len(lab.timeline.edges_between(0, 1e9)) == before + 2
    assert client.command("help") == [line for line in HELP_LINES if line]

    # At the board's 9600 baud a read-back of a KWS input takes ~2 s: off unless asked.
    assert not client.verify_by_default(len(INPUT))
    assert client.load(INPUT) is False and "dut db print%" not in lab.sent()
    assert client.load(INPUT, verify=True) is True  # db load, 26-byte db <hex>, db print
    assert (client.loads_verified, client.loads_unverified) == (1, 1)
    chunks = [t[len("dut db "):-1] for t in lab.sent() if re.fullmatch(r"dut db [0-9a-f]+%", t)]
    assert max(len(c) for c in chunks) == 52 and len(chunks) == 2 * -(-len(INPUT) // 26)
    assert bytes.fromhex("".join(chunks)) == INPUT * 2
    assert "dut db print%" in lab.sent()

    reply = client.infer(10, 1)
    assert reply.results_payload == ReferenceModel(MODEL.data, SUITE).results_payload(INPUT)
    assert reply.lines[:3] == ["m-warmup-start-1", "m-warmup-done", "m-infer-start-10"]
    assert client.results() == reply.results
    with pytest.raises(DutCommandError, match="Unknown command: bogus"):
        client.command("bogus")
    assert client.name() == "tinypowersim-software-dut"  # an error reply leaves it in step
    assert lab.sim.passthroughs == len([t for t in lab.sent() if t.startswith("dut ")])


def test_eembc_log_form_and_stray_board_lines() -> None:
    """Lines as the EEMBC runner logs them (``io: `` first) are read like the board's own."""
    replies = {
        "name": ["io: tinyML Enhanced Interface Board", "io: m-ready"],
        "dut name": ["io: m-dut-passthrough(name)", "io: m-ready",
                     "io: [dut]: m-name-dut-[eembc]", "io: [dut]: m-ready"],
        "dut profile": ["m-dut-passthrough(profile)", "m-ready", "[dut]: m-profile-[x]",
                        "who said this?", "[dut]: m-ready"],
    }
    with ScriptedBoard(replies) as url, IoManagerClient(url, "mlcommons") as client:
        assert client.sync(timeout_s=2) == "eembc"
        with pytest.raises(IoManagerError, match="printed 'who said this\\?' in the middle"):
            client.profile()


# -- the boards' own commands ----------------------------------------------------------------


def test_arduino_board_commands(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("arduino")
    client = lab.client
    assert client.board_name() == ARDUINO_NAME
    assert client.version() == "1.0.3"
    assert client.board_command("help") == list(ARDUINO_HELP)
    assert client.timestamp_mode(falling=True) == "FALLING"
    assert client.board_command("tm 0")[1] == "m-[Timer disabled after mode change]"
    assert client.timestamp_mode(falling=False) == "CHANGE"
    client.timer(True)
    assert lab.sim.timer_enabled
    client.timer(False)
    assert not lab.sim.timer_enabled
    assert client.board_command("res 1") == ["m-reset-polarity-1"]
    assert client.board_command("res") == ["m-reset-polarity-1"] and lab.sim.reset_polarity == 1
    assert client.checkbaud() == 9600  # fixed: nothing is asked
    assert client.ensure_baud(9600) is False
    assert not any(t.startswith(("checkbaud", "setbaud")) for t in lab.sent())
    for cmd in ("i2c-enable 4", "i2c-disable", "load-vdata", "show-vdata", "et", "tp"):
        with pytest.raises(IoManagerError, match="not simulated"):
            client.board_command(cmd)
    with pytest.raises(IoManagerError, match="rejected 'checkbaud'.*Unknown command"):
        client.board_command("checkbaud")
    with pytest.raises(ValueError, match="not a board command"):
        client.board_command("dut name")


def test_mlcommons_board_commands(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("mlcommons")
    client = lab.client
    assert client.board_name() == MLCOMMONS_BOARD_NAME
    assert client.checkbaud() == 9600
    assert client.board_command("ls") == []  # the simulated SD card is empty
    assert client.board_command("record_detections") == ["Now recording detections"]
    assert client.board_command("print_detections") == ["Detection Timestamps (ms)"]
    assert client.board_command("nonsense") == []  # Menu::Default: only m-ready
    for cmd in ("play x.wav", "print_dutycycle"):
        with pytest.raises(IoManagerError, match="not simulated"):
            client.board_command(cmd)
    for call in (lambda: client.timer(True), client.version, client.timestamp_mode):
        with pytest.raises(IoManagerError, match="has no .* command \\(Arduino IO manager only"):
            call()


def test_setbaud_only_when_the_baud_differs(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("mlcommons", sync=False)
    assert lab.client.ensure_baud(9600) is False
    assert lab.sim.flash_writes == 0 and not any("setbaud" in t for t in lab.sent())

    # A DUT whose energy-mode UART runs at 115200: one flash write, one reset, read back.
    fast = make_lab("mlcommons", sync=False, dut_baud=115200, reset_s=0.05)
    assert fast.client.ensure_baud(115200) is True
    assert (fast.sim.flash_writes, fast.sim.resets, fast.sim.stored_baud) == (1, 1, 115200)
    assert fast.client.checkbaud() == 115200 and fast.client.line_baud == 115200
    assert fast.client.ensure_baud(115200) is False and fast.sim.flash_writes == 1
    assert fast.client.sync(timeout_s=5) == "tinypowersim-software-dut"
    fast.client.load(INPUT)
    assert fast.client.infer(5, 0).lines[-1].startswith("m-results-[")


def test_arduino_cannot_change_its_dut_baud(make_lab: Callable[..., Lab]) -> None:
    with pytest.raises(IoManagerError, match="9600 baud only.*runs at 115200"):
        make_lab("arduino").client.ensure_baud(115200)


@pytest.mark.parametrize(("falling", "laps"), [(True, 2), (False, 4)])
def test_arduino_d3_laps_time_the_window(
    make_lab: Callable[..., Lab], falling: bool, laps: int
) -> None:
    lab = make_lab("arduino", d3_wired=True)
    lab.client.load(INPUT)
    lab.client.timestamp_mode(falling)
    lab.client.timer(True)
    reply = lab.client.infer(20, 2)  # the board's lap lines do not disturb the DUT's reply
    assert reply.lines[-1].startswith("m-results-[") and not reply.laps_us
    assert len(lab.client.board_laps_us) == laps
    board = lab.board
    window_us = (20 * board.cycle_model.latency_s(MODEL.info.macs, board.clock_hz, MODEL.data)
                 + board.energy_model.timestamp_hold_s) * 1e6
    first_fall, second_fall = lab.client.board_laps_us[0], lab.client.board_laps_us[laps // 2]
    assert second_fall - first_fall == pytest.approx(window_us, abs=1)


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kept", [0, 1])
def test_missing_passthrough_header_is_a_clear_error(
    make_lab: Callable[..., Lab], kind: str, kept: int
) -> None:
    # Passthrough 0 is sync's `name`; the header of the next one is cut to `kept` lines.
    lab = make_lab(kind, faults=IoManagerFaults(header_fault_at=1, header_lines_kept=kept))
    with pytest.raises(PassthroughHeaderError) as err:
        lab.client.profile()
    message = str(err.value)
    assert "'m-dut-passthrough(profile)' then 'm-ready'" in message
    assert "NoneType" in message
    assert ("[dut]: m-profile-[" if kept == 0 else "m-dut-passthrough(profile) | [dut]:") in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_dut_that_does_not_answer_through_the_board(
    make_lab: Callable[..., Lab], kind: str
) -> None:
    # The DUT's UART runs at 115200, the board at 9600: the DUT hears garbage, the board nothing.
    lab = make_lab(kind, sync=False, dut_baud=115200)
    lab.client.sync_board()
    with pytest.raises(DutSilentError) as err:
        lab.client.command("name", timeout_s=0.3)
    message = str(err.value)
    assert "passed 'name' to the DUT but no reply" in message
    assert "level shifters' low side" in message and "9600 baud" in message
    assert "press its reset button" in message
    assert ("D9 (TX)" in message) == (kind == "arduino")


@pytest.mark.parametrize(
    ("lines", "cause"),
    [(("m-timestamp-mode-energy", "m-init-done", "m-ready"), "the DUT rebooted"),
     (("debug: x=3",), "remove its debug prints")],
)
def test_unsolicited_output_on_the_arduino(
    make_lab: Callable[..., Lab], lines: tuple[str, ...], cause: str
) -> None:
    # Forwarded at once, after sync's `name` (passthrough 0) ended.
    lab = make_lab("arduino", faults=IoManagerFaults(unsolicited_after=1, unsolicited_lines=lines))
    with pytest.raises(FracturedMessageError) as err:
        lab.client.profile()
    message = str(err.value)
    # Seen before the command went out, or just after (before the board's header).
    when = "(between commands|before the reply to 'profile')"
    assert re.search(f"unsolicited DUT output {when}: {re.escape(' | '.join(lines))}", message)
    assert cause in message and "half-duplex" in message and "power-cycle the DUT" in message


def test_a_fractured_command_is_named(make_lab: Callable[..., Lab]) -> None:
    # The DUT spoke while `dut profile%` came in (its output itself lost): the Arduino got
    # the command with a character missing.
    lab = make_lab("arduino", faults=IoManagerFaults(unsolicited_after=1, unsolicited_lines=()))
    with pytest.raises(FracturedMessageError, match="received `dut pofile` for `dut profile`"):
        lab.client.profile()


def test_interface_board_hands_unsolicited_output_to_the_next_command(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab("mlcommons", faults=IoManagerFaults(unsolicited_after=1))
    with pytest.raises(FracturedMessageError, match="in the reply to 'profile'.*rebooted"):
        lab.client.profile()


def test_replies_out_of_step_are_detected(make_lab: Callable[..., Lab]) -> None:
    # A stale complete reply sits in the interface board's queue: each reply comes one late.
    stale = IoManagerFaults(unsolicited_after=1, unsolicited_lines=("m-results-[0.500]", "m-ready"))
    lab = make_lab("mlcommons", faults=stale)
    with pytest.raises(FracturedMessageError, match="holds 'm-results-\\[0.500\\]', which answers"):
        lab.client.profile()


@pytest.mark.parametrize("kind", KINDS)
def test_sync_recovers_from_a_boot_banner(make_lab: Callable[..., Lab], kind: str) -> None:
    # The DUT's banner before the first command: forwarded (Arduino, and the next command is
    # fractured) or queued in the interface board (every reply one late until sync realigns).
    lab = make_lab(kind, sync=False, faults=IoManagerFaults(unsolicited_after=0))
    assert lab.client.sync(timeout_s=5) == "tinypowersim-software-dut"
    assert lab.client.profile()[1] == "kws01"
    assert ("dut help%" in lab.sent()) == (kind == "mlcommons")


def test_wrong_kind_or_port_is_named(make_lab: Callable[..., Lab]) -> None:
    with pytest.raises(IoManagerError, match="not the MLCommons interface board.*'arduino'"):
        make_lab("arduino", client_kind="mlcommons")
    with pytest.raises(IoManagerError, match="is the MLCommons interface board.*'mlcommons'"):
        make_lab("mlcommons", client_kind="arduino")
    board = load_board("sim-m4")
    timeline = LoadTimeline(VirtualClock(), 0.001)
    with SoftwareDut(model=MODEL.data, suite=SUITE, board=board, timeline=timeline,
                     mode="energy", macs=MODEL.info.macs) as dut, \
            IoManagerClient(dut.start(), "arduino") as client, \
            pytest.raises(IoManagerError, match="this port is the DUT itself"):
        client.sync_board()


# -- end to end ------------------------------------------------------------------------------


def test_energy_measurement_through_the_arduino_io_manager(tmp_path: Path) -> None:
    def request(**kw: object) -> RunRequest:
        return RunRequest(board=load_board("sim-m4"), suite=SUITE, model=MODEL,
                          dataset=synthetic_inputs(SUITE), mode="energy", runs_dir=tmp_path, **kw)

    direct = run(request())
    through = run(request(interface="arduino"))
    assert direct.ok, direct.error
    assert through.ok, through.error
    assert through.result.value == pytest.approx(direct.result.value, rel=1e-3)
    board = load_board("sim-m4")
    latency_s = board.cycle_model.latency_s(MODEL.info.macs, board.clock_hz, MODEL.data)
    truth_uj = board.monitor_voltage_v * board.energy_model.active_current_a * latency_s * 1e6
    assert through.result.value == pytest.approx(truth_uj, rel=1e-3)
    assert all(w["duration_s"] >= 10 for w in through.result.windows)
    session = (through.session.folder / "session.json").read_text()
    assert '"kind": "arduino"' in session and '"baud_changed": false' in session
    log = (through.session.folder / "transcript.log").read_text()
    assert "> dut infer " in log and "< [dut]: m-infer-done" in log
    with pytest.raises(RunError, match="unknown interface 'usb'"):
        run(request(interface="usb"))


def test_other_modes_talk_to_the_dut_directly(tmp_path: Path) -> None:
    outcome = run(RunRequest(board=load_board("sim-m4"), suite=SUITE, model=MODEL,
                             dataset=synthetic_inputs(SUITE, 1), mode="accuracy",
                             runs_dir=tmp_path, interface="mlcommons"))
    assert outcome.ok, outcome.error
    assert ("the mlcommons IO manager is in the energy-mode path only: accuracy mode talks to "
            "the DUT directly") in outcome.notes
    assert "dut " not in (outcome.session.folder / "transcript.log").read_text()


# -- helpers ---------------------------------------------------------------------------------


def _read_boot_banner(url: str) -> None:
    fd = os.open(url, os.O_RDWR | os.O_NOCTTY)  # not pyserial: its open would flush the banner
    try:
        banner = b""
        while not banner.endswith(b"m-ready\r\n"):
            assert select.select([fd], [], [], 5)[0], f"no boot banner from the DUT: {banner!r}"
            banner += os.read(fd, 1024)
    finally:
        os.close(fd)


class ScriptedBoard:
    """A pty that answers each `<cmd>%` with the given lines, as a board would."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return os.ttyname(self.slave)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)

    def _serve(self) -> None:
        pending = b""
        while not self.stop.is_set():
            if not select.select([self.master], [], [], 0.01)[0]:
                continue
            pending += os.read(self.master, 1024)
            while b"%" in pending:
                cmd, pending = pending.split(b"%", 1)
                lines = self.replies.get(cmd.decode(), [])
                os.write(self.master, "".join(f"{line}\r\n" for line in lines).encode())
