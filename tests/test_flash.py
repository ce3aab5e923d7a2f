"""Flashing through pyOCD (tinypower.flash) without a probe: pyOCD's ConnectHelper and
FileProgrammer are replaced at the library boundary, everything else (image checks, pyOCD's
target table, CMSIS pack parsing) is real. Checks the calls made (probe, target, file, format,
base address, reset) and every error a user can meet."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
import usb.core
from pyocd.board.board_ids import BoardInfo
from pyocd.core import exceptions as pyocd_errors
from pyocd.core.helpers import ConnectHelper
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

import tinypower.flash as flash_mod
from tinypower.boards import load_board
from tinypower.cli import main
from tinypower.dut.virtual_lab import VirtualLab
from tinypower.flash import FlashError, check_target, flash, image_format, list_probes, reset
from tinypower.models import resolve_model
from tinypower.suites.benchmarks import get_suite

TARGET = "stm32l475xg"  # built into pyOCD 0.46


class FakeProbe:
    """What pyOCD's probe aggregator returns: a DebugProbe's public attributes."""

    def __init__(self, unique_id: str, board: BoardInfo | None = None) -> None:
        self.unique_id = unique_id
        self.description = f"STM32 STLink {unique_id[-4:]}"
        self.vendor_name = "STMicroelectronics"
        self.product_name = "STM32 STLink"
        self.associated_board_info = board


class Pyocd:
    """Stands in for ConnectHelper and FileProgrammer and records what tinypower asked for."""

    def __init__(self, probes: list[FakeProbe], fail_on_open: Exception | None = None,
                 no_session: bool = False) -> None:
        self.probes = probes
        self.fail_on_open = fail_on_open
        self.no_session = no_session
        self.calls: list[tuple] = []

    def get_all_connected_probes(self, blocking: bool = True, **kw) -> list[FakeProbe]:
        self.calls.append(("list", blocking))
        return self.probes

    def session_with_chosen_probe(self, **kwargs):
        self.calls.append(("session", kwargs))
        return None if self.no_session else FakeSession(self)

    def programmer(self, session, progress=None, **options):
        pyocd = self

        class Programmer:
            def program(self, path: str, file_format: str | None = None, **kwargs) -> None:
                pyocd.calls.append(("program", path, file_format, kwargs, options))
                progress(0.5)
                progress(1.0)

        assert isinstance(session, FakeSession) and session.is_open
        return Programmer()


class FakeSession:
    def __init__(self, pyocd: Pyocd) -> None:
        self.pyocd = pyocd
        self.is_open = False
        self.target = self

    def __enter__(self) -> FakeSession:
        if self.pyocd.fail_on_open:
            raise self.pyocd.fail_on_open
        self.is_open = True
        self.pyocd.calls.append(("open",))
        return self

    def __exit__(self, *exc) -> bool:
        self.is_open = False
        self.pyocd.calls.append(("close",))
        return False

    def reset(self) -> None:
        assert self.is_open
        self.pyocd.calls.append(("reset",))


@pytest.fixture
def pyocd(monkeypatch: pytest.MonkeyPatch) -> Pyocd:
    fake = Pyocd([FakeProbe("066DFF535254887767184025")])
    monkeypatch.setattr(ConnectHelper, "get_all_connected_probes",
                        lambda **kw: fake.get_all_connected_probes(**kw))
    monkeypatch.setattr(ConnectHelper, "session_with_chosen_probe",
                        lambda **kw: fake.session_with_chosen_probe(**kw))
    monkeypatch.setattr(flash_mod, "FileProgrammer", fake.programmer)
    return fake


def arm_elf(path: Path, machine: int = 40) -> Path:
    """A minimal little-endian ELF32 header (what the toolchain writes first)."""
    header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 2, machine, 1, 0x08000101, 52, 0, 0x05000000, 52, 32, 0, 40, 0, 0)
    path.write_bytes(header + bytes(64))
    return path


HEX = ":0400000001020304F2\n:00000001FF\n"  # 4 data bytes at 0, then end of file


def test_list_probes_reports_pyocd_probes_and_their_board(pyocd: Pyocd) -> None:
    pyocd.probes = [FakeProbe("0001", BoardInfo("NUCLEO-L4R5ZI", "stm32l4r5zitx")),
                    FakeProbe("0002")]
    probes = list_probes()
    assert [p.unique_id for p in probes] == ["0001", "0002"]
    assert probes[0].board_name == "NUCLEO-L4R5ZI"
    assert probes[0].board_target == "stm32l4r5zitx"
    assert probes[1].board_name is None and probes[1].vendor == "STMicroelectronics"
    assert pyocd.calls == [("list", False)]  # never waits for a probe to be plugged in


def test_flash_elf_programs_the_file_and_resets(pyocd: Pyocd, tmp_path: Path) -> None:
    image = arm_elf(tmp_path / "fw.elf")
    seen: list[float] = []
    probe = flash(image, "STM32L475XG", progress=seen.append)
    assert probe.unique_id == "066DFF535254887767184025"
    kinds = [c[0] for c in pyocd.calls]
    assert kinds == ["list", "session", "open", "program", "reset", "close"]
    session = pyocd.calls[1][1]
    assert session["unique_id"] == "066DFF535254887767184025"
    assert session["target_override"] == TARGET  # normalised to pyOCD's lower case
    assert session["blocking"] is False and session["return_first"] is True
    assert session["options"] == {}
    _, path, fmt, kwargs, options = pyocd.calls[3]
    assert (path, fmt, kwargs) == (str(image), "elf", {})
    assert options == {"chip_erase": "auto", "smart_flash": True}
    assert seen == [0.5, 1.0]


def test_flash_bin_passes_the_base_address(pyocd: Pyocd, tmp_path: Path) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(bytes(range(256)))
    flash(image, TARGET, base_address=0x08000000)
    program = next(c for c in pyocd.calls if c[0] == "program")
    assert program[1:4] == (str(image), "bin", {"base_address": 0x08000000})


def test_flash_hex_is_checked_and_programmed(pyocd: Pyocd, tmp_path: Path) -> None:
    image = tmp_path / "fw.hex"
    image.write_text(HEX)
    flash(image, TARGET)
    assert next(c for c in pyocd.calls if c[0] == "program")[2] == "hex"


def test_bin_without_base_address_is_refused_before_any_probe(pyocd: Pyocd,
                                                               tmp_path: Path) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x00" * 16)
    with pytest.raises(FlashError, match=r"raw \.bin.*--base-address.*0x08000000"):
        flash(image, TARGET)
    assert pyocd.calls == []


def test_base_address_on_an_elf_is_refused(pyocd: Pyocd, tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="applies only to .bin"):
        flash(arm_elf(tmp_path / "fw.elf"), TARGET, base_address=0x08000000)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("fw.elf", None, "not found: fix the path, or let tinypower build and flash"),
        ("fw.elf", b"", "is empty"),
        ("fw.elf", b":00000001FF\n", "not an ELF file"),
        ("fw.elf", b"\x7fELF\x01\x01", "truncated or not a 32-bit ELF"),
        ("fw.hex", b":0400000001020304F3\n:00000001FF\n", "line 1 .*bad checksum"),
        ("fw.hex", b":0400000001020304F2\n", "no Intel HEX end-of-file record"),
        ("fw.hex", b"\x7fELF garbage\n", "line 1 .*does not start with ':'"),
        ("fw.hex", b":04000000010203F2\n", "line 1 .*length"),
        ("fw.img", b"data", r"unsupported image type '\.img'"),
    ],
)
def test_missing_or_corrupt_images_are_named(tmp_path: Path, name: str, content: bytes | None,
                                             message: str) -> None:
    image = tmp_path / name
    if content is not None:
        image.write_bytes(content)
    with pytest.raises(FlashError, match=message) as exc:
        image_format(image)
    assert str(image) in str(exc.value)


def test_elf_for_another_cpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="machine 62, not Arm"):
        image_format(arm_elf(tmp_path / "host.elf", machine=62))  # x86-64


def test_no_probe_says_how_to_attach_one(pyocd: Pyocd, tmp_path: Path) -> None:
    pyocd.probes = []
    with pytest.raises(FlashError) as exc:
        flash(arm_elf(tmp_path / "fw.elf"), TARGET)
    message = str(exc.value)
    assert message.startswith("no debug probe found: plug the board's ST-LINK/J-Link")
    assert "udev rules" in message and "pyocd list" in message
    assert [c[0] for c in pyocd.calls] == ["list"]  # no session was attempted


def test_several_probes_need_a_choice(pyocd: Pyocd, tmp_path: Path) -> None:
    pyocd.probes = [FakeProbe("066DFF535254887767184025"), FakeProbe("0670FF484849785087124512")]
    image = arm_elf(tmp_path / "fw.elf")
    with pytest.raises(FlashError, match="2 debug probes attached: 066DFF.*0670FF.*--probe"):
        flash(image, TARGET)
    with pytest.raises(FlashError, match="no debug probe with ID 'ABC'; attached: 066DFF"):
        flash(image, TARGET, probe_id="ABC")
    with pytest.raises(FlashError, match="matches 2 probes"):
        flash(image, TARGET, probe_id="FF")
    flash(image, TARGET, probe_id="0670ff")  # any unique part, any case
    session = next(c[1] for c in pyocd.calls if c[0] == "session")
    assert session["unique_id"] == "0670FF484849785087124512"


def test_unknown_target_suggests_close_names_and_packs(pyocd: Pyocd, tmp_path: Path) -> None:
    with pytest.raises(FlashError) as exc:
        flash(arm_elf(tmp_path / "fw.elf"), "stm32l475xx")
    message = str(exc.value)
    assert "unknown pyOCD target 'stm32l475xx'" in message
    assert "Did you mean stm32l475x" in message
    assert "pyocd list --targets" in message and "--pack" in message
    assert pyocd.calls == []  # checked before touching USB


def pack_with(tmp_path: Path, device: str) -> Path:
    """A minimal CMSIS pack: a zip holding a .pdsc that describes one device."""
    pdsc = f"""<?xml version="1.0" encoding="UTF-8"?>
<package schemaVersion="1.4">
  <vendor>Tinypower</vendor><name>Test_DFP</name><description>test</description>
  <releases><release version="1.0.0">test</release></releases>
  <devices>
    <family Dfamily="Test Series" Dvendor="STMicroelectronics:13">
      <processor Dcore="Cortex-M4" DcoreVersion="r0p1" Dfpu="SP_FPU" Dendian="Little-endian"/>
      <device Dname="{device}">
        <memory id="IROM1" start="0x08000000" size="0x00010000" startup="1" default="1"/>
        <memory id="IRAM1" start="0x20000000" size="0x00008000" init="0" default="1"/>
      </device>
    </family>
  </devices>
</package>
"""
    path = tmp_path / "Tinypower.Test_DFP.1.0.0.pack"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("Tinypower.Test_DFP.pdsc", pdsc)
    return path


def test_a_pack_target_is_found_in_the_pack_and_passed_to_pyocd(pyocd: Pyocd,
                                                                 tmp_path: Path) -> None:
    pack = pack_with(tmp_path, "TP4R5ZITx")
    assert check_target("TP4R5ZITx", pack) == "tp4r5zitx"
    with pytest.raises(FlashError, match="unknown pyOCD target 'tp4r5zitx'"):
        check_target("tp4r5zitx")  # not without its pack
    flash(arm_elf(tmp_path / "fw.elf"), "tp4r5zitx", pack=pack)
    session = next(c[1] for c in pyocd.calls if c[0] == "session")
    assert session["target_override"] == "tp4r5zitx"
    assert session["options"] == {"pack": str(pack)}


def test_wrong_missing_or_corrupt_pack_is_named(tmp_path: Path) -> None:
    pack = pack_with(tmp_path, "TP4R5ZITx")
    with pytest.raises(FlashError, match="has no device 'stm32l4r5zitx'; it provides: tp4r5zitx"):
        check_target("stm32l4r5zitx", pack)
    with pytest.raises(FlashError, match="not found: download"):
        check_target("tp4r5zitx", tmp_path / "missing.pack")
    broken = tmp_path / "broken.pack"
    broken.write_bytes(b"not a zip")
    with pytest.raises(FlashError, match="cannot be read .*download it again"):
        check_target("tp4r5zitx", broken)


def test_pyocd_refusing_the_target_at_connect_is_a_flash_error(pyocd: Pyocd,
                                                              tmp_path: Path) -> None:
    pyocd.fail_on_open = pyocd_errors.TargetSupportError("Target type x not recognized")
    with pytest.raises(FlashError, match="pyOCD cannot drive target 'stm32l475xg'.*--pack"):
        flash(arm_elf(tmp_path / "fw.elf"), TARGET)


def test_lost_swd_contact_and_usb_permission_are_explained(pyocd: Pyocd,
                                                          tmp_path: Path) -> None:
    image = arm_elf(tmp_path / "fw.elf")
    pyocd.fail_on_open = pyocd_errors.TransferFaultError("SWD fault")
    with pytest.raises(FlashError, match="lost contact with the target over SWD.*powered"):
        flash(image, TARGET)
    pyocd.fail_on_open = PermissionError(13, "Access denied (insufficient permissions)")
    with pytest.raises(FlashError, match="no permission to open the USB device.*udev"):
        flash(image, TARGET)


def test_probe_vanishing_before_open_is_explained(pyocd: Pyocd, tmp_path: Path) -> None:
    pyocd.no_session = True
    with pytest.raises(FlashError, match="disappeared before it could be opened"):
        flash(arm_elf(tmp_path / "fw.elf"), TARGET)


def test_reset_opens_a_session_and_resets(pyocd: Pyocd) -> None:
    probe = reset(TARGET)
    assert probe.unique_id == "066DFF535254887767184025"
    assert [c[0] for c in pyocd.calls] == ["list", "session", "open", "reset", "close"]


def test_flash_command_uses_the_board_files_target(pyocd: Pyocd, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    board = tmp_path / "b.toml"
    board.write_text(
        'name = "b"\nkind = "hardware"\ncore = "cortex-m4f"\nclock_hz = 80_000_000\n'
        f'[pyocd]\ntarget = "{TARGET}"\n'
        '[monitor]\nkind = "lpm01a"\nvoltage_v = 1.8\nsample_rate_hz = 1000\n'
    )
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x01" * 32)
    assert main(["flash", str(image), "--board", str(board), "--base-address", "0x08000000"]) == 0
    out = capsys.readouterr().out
    assert f"flashed {image} to {TARGET} through probe 066DFF535254887767184025" in out
    program = next(c for c in pyocd.calls if c[0] == "program")
    assert program[1:4] == (str(image), "bin", {"base_address": 0x08000000})


def test_flash_command_errors_are_one_line_and_exit_2(pyocd: Pyocd, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    pyocd.probes = []
    image = arm_elf(tmp_path / "fw.elf")
    assert main(["flash", str(image), "--target", TARGET]) == 2
    err = capsys.readouterr().err
    assert "error: no debug probe found" in err and "Traceback" not in err
    assert main(["flash", str(image), "--board", "sim-m4"]) == 2
    assert "board sim-m4 has no [pyocd] target" in capsys.readouterr().err


def test_flash_command_finds_the_attached_board_and_its_probe(
    pyocd: Pyocd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    # Two probes: the board's ST-LINK and the IO manager's; the board is found by its
    # ST-LINK's serial port, so the right probe is used without --probe.
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "b.toml").write_text(
        'name = "b"\nkind = "hardware"\ncore = "cortex-m4f"\nclock_hz = 80_000_000\n'
        f'[pyocd]\ntarget = "{TARGET}"\n[usb]\nvid = 0x0483\npid = 0x374B\n'
        '[monitor]\nkind = "lpm01a"\nvoltage_v = 1.8\nsample_rate_hz = 1000\n'
    )
    monkeypatch.setenv("TINYPOWER_BOARDS", str(boards))
    pyocd.probes = [FakeProbe("002B00213133510137303835"), FakeProbe("0670FF484849785087124512")]
    port = ListPortInfo("/dev/ttyACM0", skip_link_detection=True)
    port.vid, port.pid, port.serial_number = 0x0483, 0x374B, "0670FF484849785087124512"
    monkeypatch.setattr(list_ports, "comports", lambda: [port])
    monkeypatch.setattr(usb.core, "find", lambda **kw: iter(()))
    assert main(["flash", str(arm_elf(tmp_path / "fw.elf"))]) == 0
    assert "flashing the attached board b" in capsys.readouterr().err
    session = next(c[1] for c in pyocd.calls if c[0] == "session")
    assert session["unique_id"] == "0670FF484849785087124512"
    assert session["target_override"] == TARGET
    monkeypatch.setattr(list_ports, "comports", lambda: [])
    assert main(["flash", str(tmp_path / "fw.elf")]) == 2
    assert "give --board NAME or --target NAME: no attached board was recognised" in " ".join(
        capsys.readouterr().err.split())


def test_measure_flash_builds_programs_then_measures_in_the_firmwares_mode(
        pyocd: Pyocd, tmp_path: Path, capsys: pytest.CaptureFixture, arm_toolchain,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`measure --flash` on a hardware board: the benchmark firmware is built for the board and
    model, programmed through the probe discovery found, and then switched to the run's mode
    (the DUT here is the software DUT on a pty, which answers `mode` as the firmware does)."""
    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "cache"))  # not the user's cache
    suite = get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    with VirtualLab(board=load_board("sim-m4"), suite=suite, model=model.data,
                    macs=model.info.macs, mode="performance") as lab:
        code = main(["measure", "--board", "nrf52840dk", "--flash", "--mode", "performance",
                     "--port", lab.dut_url, "--runs-dir", str(tmp_path / "runs"), "--json"])
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert code == 0, record["error"]
    assert record["valid"] and record["measured_as"] == "simulated"
    program = next(c for c in pyocd.calls if c[0] == "program")
    assert program[1].endswith("fw.elf") and "nrf52840dk-kws01" in program[1]
    session = json.loads(next((tmp_path / "runs").glob("*/session.json")).read_text())
    assert session["config"]["board_file"].endswith("nrf52840dk.toml")
    transcript = next((tmp_path / "runs").glob("*/transcript.log")).read_text()
    assert "> mode performance%" in transcript and "m-mode-[performance]" in transcript
    assert "flashed through probe 066DFF535254887767184025" in captured.err
