"""The MLPerf Tiny host client against the software DUT and scripted ptys, over real pyserial.

Every command and every error reply of the reference firmware, timeouts on a port nobody
answers, the ``socket://`` transport, the read-back that catches a corrupted download, and the
transcript. The scripted-pty tests write the DUT's bytes by hand, so they pin the client to the
firmware's exact framing rather than to our own DUT's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from tinypower.boards import load_board
from tinypower.dut.protocol import (
    DutClient,
    DutCommandError,
    DutProtocolError,
    DutTimeoutError,
    InputCorruptError,
)
from tinypower.dut.software_dut import FW_VERSION, SoftwareDut
from tinypower.dut.transcript import Transcript
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.model_info import read_model_info

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
DUT_NAME = "test-dut"

OpenDut = Callable[..., DutClient]


@pytest.fixture(scope="module")
def kws_model() -> bytes:
    path = MODELS / "kws_ref_model.tflite"
    if not path.is_file():
        pytest.skip(f"MLPerf Tiny reference model not found at {path} (shared data folder)")
    return path.read_bytes()


@pytest.fixture(scope="module")
def kws_input() -> bytes:
    return (MODELS / "samples" / "kws01_sample0.bin").read_bytes()


@pytest.fixture
def open_dut(kws_model: bytes) -> Iterator[OpenDut]:
    """Start a performance-mode software DUT and return a synced client for it."""
    with ExitStack() as stack:

        def open_(
            transport: str = "pty", transcript: Transcript | None = None, **dut_options: int
        ) -> DutClient:
            board = load_board("sim-m4")
            assert board.energy_model is not None
            dut = stack.enter_context(
                SoftwareDut(
                    model=kws_model,
                    suite=get_suite("kws01"),
                    board=board,
                    timeline=LoadTimeline(VirtualClock(), board.energy_model.idle_current_a),
                    mode="performance",
                    macs=read_model_info(kws_model).macs,
                    name=DUT_NAME,
                    **dut_options,
                )
            )
            client = stack.enter_context(DutClient(dut.start(transport), transcript=transcript))
            assert client.sync() == DUT_NAME
            return client

        yield open_


@pytest.fixture
def scripted() -> Iterator[tuple[int, DutClient]]:
    """A client on a bare pty whose other end (the master fd) the test plays by hand."""
    master, slave = os.openpty()
    client = DutClient(os.ttyname(slave))
    yield master, client
    client.close()
    os.close(master)
    os.close(slave)


def test_identity_commands(open_dut: OpenDut) -> None:
    dut = open_dut()
    assert dut.name() == DUT_NAME
    assert dut.profile() == (FW_VERSION, "kws01")
    first, second = dut.timestamp(), dut.timestamp()
    assert isinstance(first, int) and isinstance(second, int) and second > first
    assert dut.command("help")[0] == FW_VERSION


def test_load_infer_and_results(open_dut: OpenDut, kws_input: bytes) -> None:
    dut = open_dut()
    dut.load(kws_input)
    reply = dut.infer(3, 1)
    assert reply.lines[:3] == ["m-warmup-start-1", "m-warmup-done", "m-infer-start-3"]
    assert reply.lines[-2:] == ["m-infer-done", f"m-results-[{reply.results_payload}]"]
    assert len(reply.results) == 12 and reply.results == [
        float(v) for v in reply.results_payload.split(",")
    ]
    assert len(reply.laps_us) == 2 and reply.laps_us[1] > reply.laps_us[0]
    assert dut.results() == reply.results


def test_infer_without_warmups_runs_the_firmware_default_of_ten(
    open_dut: OpenDut, kws_input: bytes
) -> None:
    dut = open_dut()
    dut.load(kws_input)
    assert dut.command("infer 2")[0] == "m-warmup-start-10"


@pytest.mark.parametrize(
    ("command", "dut_text"),
    [
        ("bogus 1 2", "e-[Unknown command: bogus]"),
        ("db abc", "e-[Insufficent number of hex digits]"),
        ("db zz", "e-[Invalid hex digit 'zz']"),
        ("db", "e-[Command 'db' requires a subcommand]"),
        ("db load 0", "e-[Command 'db load' must be >0 bytes]"),
        ("db load", "e-[Command 'db load' requires the # of bytes]"),
        ("x" * 81, "e-[Command too long: more than 80 characters before '%']"),
        ("infer 0 0", "e-[Inference iterations must be >0]"),
        ("infer 1 -1", "e-[Inference warmup must be >=0]"),
        (
            "infer 1 0",
            "e-[Input buffer holds 0 bytes, kws01 needs 490: send db load 490 and db first]",
        ),
        ("results", "e-[No results yet: run infer first]"),
    ],
)
def test_error_replies_raise_and_leave_the_link_in_step(
    open_dut: OpenDut, command: str, dut_text: str
) -> None:
    dut = open_dut()
    with pytest.raises(DutCommandError) as caught:
        dut.command(command)
    assert caught.value.dut_text == dut_text
    assert caught.value.command == command
    assert dut.name() == DUT_NAME  # the error's m-ready was consumed: the next reply is ours


def test_error_hint_names_the_fix(open_dut: OpenDut) -> None:
    with pytest.raises(DutCommandError, match="check the baud rate and cabling"):
        open_dut().command("db 123")


def test_oversized_input_is_refused_before_download(open_dut: OpenDut) -> None:
    with pytest.raises(DutProtocolError, match="did not accept a 600-byte input"):
        open_dut().load(bytes(600))


def test_socket_transport(open_dut: OpenDut, kws_input: bytes) -> None:
    dut = open_dut("tcp")
    assert dut.url.startswith("socket://127.0.0.1:")
    dut.load(kws_input)
    assert len(dut.infer(1, 0).results) == 12


def test_corrupted_download_is_caught_by_the_read_back(open_dut: OpenDut, kws_input: bytes) -> None:
    dut = open_dut(corrupt_download_byte=100)
    with pytest.raises(InputCorruptError, match=r"corrupted at byte 100: check the UART") as caught:
        dut.load(kws_input)
    assert caught.value.offset == 100
    dut.load(kws_input, verify=False)  # without the read-back the damage goes unnoticed


def test_timeout_on_a_port_nobody_answers(scripted: tuple[int, DutClient]) -> None:
    _, client = scripted
    started = time.monotonic()
    with pytest.raises(DutTimeoutError) as caught:
        client.command("name", timeout_s=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    message = str(caught.value)
    assert "'name'" in message and " 0.2 s " in message
    for fix in ("baud rate", "flashed", "powered"):
        assert fix in message
    with pytest.raises(DutTimeoutError, match="'name'"):
        client.sync(timeout_s=0.3)


def test_client_sends_bare_percent_framing_and_skips_a_boot_banner(
    scripted: tuple[int, DutClient],
) -> None:
    master, client = scripted
    # A DUT that rebooted just before answering: banner (with its boot lap), then the reply.
    os.write(
        master,
        b"\0m-timestamp-mode-performance\r\nm-lap-us-17\r\nm-init-done\r\nm-ready\r\n"
        b"m-name-dut-[board]\r\nm-ready\r\n",
    )
    assert client.name() == "board"
    assert os.read(master, 100) == b"name%"


def test_missing_load_done_is_an_error(scripted: tuple[int, DutClient]) -> None:
    master, client = scripted
    os.write(master, b"m-[Expecting 4 bytes]\r\nm-ready\r\nm-ready\r\n")
    with pytest.raises(DutProtocolError, match="did not report m-load-done after 4 of 4 bytes"):
        client.load(b"\x01\x02\x03\x04")


def test_transcript_records_every_line_with_monotonic_time(
    open_dut: OpenDut, tmp_path: Path
) -> None:
    path = tmp_path / "transcript.log"
    before = time.monotonic()
    with Transcript(path) as transcript:
        dut = open_dut(transcript=transcript)
        dut.name()
        after = time.monotonic()
        written = path.read_text().splitlines()  # readable while still open: nothing buffered
    entries = [(d, t) for _, d, t in transcript.lines]
    assert (">", "name%") in entries and ("<", f"m-name-dut-[{DUT_NAME}]") in entries
    assert ("<", "m-ready") in entries and entries[0][0] == "#"
    times = [t for t, _, _ in transcript.lines]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after
    assert len(written) == len(transcript.lines)
    for line, (t, direction, text) in zip(written, transcript.lines, strict=True):
        assert line == f"{t:.6f} {direction} {text}"
        assert re.fullmatch(r"\d+\.\d{6} [<>#] .*", line)
