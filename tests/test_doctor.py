"""Discovery (tinypower.doctor, `tinypower doctor`, `tinypower measure` without --board): real
pyserial ListPortInfo objects built here stand for what is plugged in, board files are real
TOML, an Otii server is a real loopback socket; only the library boundaries that need hardware
(pyserial's comports, pyOCD's ConnectHelper, pyusb's find) are replaced in the CLI tests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import usb.core
from pyocd.board.board_ids import BoardInfo
from pyocd.core.helpers import ConnectHelper
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from tinypower.boards import Board, load_board
from tinypower.cli import main
from tinypower.doctor import (
    BOARD,
    IO_MANAGER,
    IO_MANAGER_HELP,
    MONITOR,
    UNKNOWN,
    UsbDevice,
    bench_ports,
    discover,
)
from tinypower.dut.hardware_bench import BenchPorts
from tinypower.flash import ProbeInfo

STLINK_SERIAL = "066DFF535254887767184025"


def usb_port(device: str, vid: int, pid: int, serial: str, product: str) -> ListPortInfo:
    port = ListPortInfo(device, skip_link_detection=True)
    port.vid, port.pid, port.serial_number, port.product = vid, pid, serial, product
    port.apply_usb_info()
    return port


def stlink_port() -> ListPortInfo:
    return usb_port("/dev/ttyACM0", 0x0483, 0x374B, STLINK_SERIAL, "STM32 STLink")


def lpm01a_port() -> ListPortInfo:
    return usb_port("/dev/ttyACM1", 0x0483, 0x5740, "3574364C3034", "STM32 Virtual ComPort")


def h573_port() -> ListPortInfo:
    return usb_port("/dev/ttyACM2", 0x0483, 0x374E, "002B00213133510137303835", "STLINK-V3")


def l4r5zi_probe() -> ProbeInfo:
    return ProbeInfo(STLINK_SERIAL, "NUCLEO-L4R5ZI [stm32l4r5zitx]", "STMicroelectronics",
                     "STM32 STLink", "NUCLEO-L4R5ZI", "stm32l4r5zitx")


def registry() -> list[Board]:
    return [load_board("sim-m4"), load_board("nucleo-l4r5zi")]


def hardware_board(tmp_path: Path, name: str, extra: str, io_manager: bool = True) -> Board:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nkind = "hardware"\ncore = "cortex-m4f"\nclock_hz = 80_000_000\n'
        f"{extra}\n[monitor]\nkind = \"lpm01a\"\nvoltage_v = 1.8\nsample_rate_hz = 1000\n"
        f"io_manager = {str(io_manager).lower()}\n"
    )
    return load_board(str(path))


def test_nothing_attached_suggests_the_virtual_lab() -> None:
    legacy_uart = ListPortInfo("/dev/ttyS0", skip_link_detection=True)  # no USB: not listed
    report = discover(ports=[legacy_uart], probes=[], usb_devices=[], otii_address=None,
                      boards=registry())
    assert report.devices == [] and report.boards == [] and report.problems == []
    assert report.board_to_measure == "sim-m4"
    assert report.suggestion.startswith("no board attached: `tinypower measure` runs on the "
                                        "virtual lab (sim-m4, simulated)")


def test_l4r5zi_stlink_and_lpm01a_need_only_an_io_manager() -> None:
    report = discover(ports=[lpm01a_port(), stlink_port()], probes=[l4r5zi_probe()],
                      usb_devices=[], otii_address=None, boards=registry())
    stlink, lpm = report.devices  # sorted by port
    assert (stlink.address, stlink.usb_id, stlink.role) == ("/dev/ttyACM0", "0483:374B", BOARD)
    assert stlink.boards == ["nucleo-l4r5zi"] and stlink.probe_id == STLINK_SERIAL
    assert stlink.identified_as == "NUCLEO-L4R5ZI (ST-LINK/V2-1)"
    assert (lpm.role, lpm.monitor_kind, lpm.serial_number) == (MONITOR, "lpm01a", "3574364C3034")
    [status] = report.boards
    assert status.name == "nucleo-l4r5zi" and status.devices == ["/dev/ttyACM0"]
    assert status.modes["performance"].ready and status.modes["accuracy"].ready
    assert not status.modes["energy"].ready
    assert status.modes["energy"].missing == [IO_MANAGER_HELP]
    assert status.flash == f"probe {STLINK_SERIAL}"
    assert report.board_to_measure == "nucleo-l4r5zi"
    assert "found board nucleo-l4r5zi on /dev/ttyACM0" in report.suggestion


def test_with_the_interface_board_energy_mode_is_ready() -> None:
    report = discover(ports=[stlink_port(), lpm01a_port(), h573_port()],
                      probes=[l4r5zi_probe()], usb_devices=[], otii_address=None,
                      boards=registry())
    roles = {d.address: d.role for d in report.devices}
    assert roles == {"/dev/ttyACM0": BOARD, "/dev/ttyACM1": MONITOR, "/dev/ttyACM2": IO_MANAGER}
    [status] = report.boards
    assert all(m.ready and not m.missing for m in status.modes.values())


def test_bench_ports_come_from_what_discovery_found() -> None:
    report = discover(ports=[stlink_port(), lpm01a_port(), h573_port()],
                      probes=[l4r5zi_probe()], usb_devices=[], otii_address=None,
                      boards=registry())
    ports, probe = bench_ports(report, load_board("nucleo-l4r5zi"))
    assert ports == BenchPorts(dut="/dev/ttyACM0", monitor="/dev/ttyACM1",
                               interface="/dev/ttyACM2")
    assert probe == STLINK_SERIAL
    # Without a monitor of the board file's kind, or an IO manager, those stay unknown.
    report = discover(ports=[stlink_port()], probes=[], usb_devices=[], otii_address=None,
                      boards=registry())
    assert bench_ports(report, load_board("nucleo-l4r5zi")) == (
        BenchPorts(dut="/dev/ttyACM0"), None)


def test_board_without_io_manager_needs_only_its_monitor(tmp_path: Path) -> None:
    board = hardware_board(tmp_path, "isolated", "[usb]\nvid = 0x1209\npid = [0x0001, 0x0002]",
                           io_manager=False)
    dut = usb_port("/dev/ttyUSB0", 0x1209, 0x0002, "A1", "DUT UART")
    report = discover(ports=[dut, lpm01a_port()], probes=[], usb_devices=[], otii_address=None,
                      boards=[*registry(), board])
    [status] = report.boards
    assert status.name == "isolated"
    assert status.modes["energy"].ready
    assert status.flash == "no debug probe seen: cannot flash"
    assert any("no [pyocd] target" in note for note in status.notes)


def test_board_without_a_monitor_says_which_kind_it_needs() -> None:
    report = discover(ports=[stlink_port()], probes=[], usb_devices=[
        UsbDevice(0x16D0, 0x10BA, "bus 3 address 9")], otii_address=None, boards=registry())
    [status] = report.boards
    [monitor_missing, io_missing] = status.modes["energy"].missing
    assert monitor_missing.startswith("a lpm01a energy monitor (attached: Joulescope JS220;")
    assert io_missing == IO_MANAGER_HELP
    assert status.flash == "no debug probe seen: cannot flash"  # a port alone is no probe


def test_unknown_devices_are_listed_as_unknown() -> None:
    ch340 = usb_port("/dev/ttyUSB0", 0x1A86, 0x7523, None, "USB Serial")
    stray_probe = ProbeInfo("000440112138", "Segger J-Link", "SEGGER", "J-Link")
    usb = [UsbDevice(0x1D6B, 0x0002, "bus 1 address 1")]  # a root hub: not an instrument
    report = discover(ports=[ch340], probes=[stray_probe], usb_devices=usb, otii_address=None,
                      boards=registry())
    port, probe = report.devices
    assert (port.identified_as, port.role, port.boards) == ("unknown", UNKNOWN, [])
    assert port.usb_id == "1A86:7523" and port.description == "USB Serial"
    assert (probe.source, probe.address, probe.identified_as) == (
        "probe", "000440112138", "SEGGER J-Link")
    assert report.boards == [] and report.board_to_measure == "sim-m4"


def test_monitor_without_a_board_names_the_boards_it_could_power() -> None:
    report = discover(ports=[lpm01a_port()], probes=[], usb_devices=[], otii_address=None,
                      boards=registry())
    assert report.board_to_measure == "sim-m4"
    assert ("Energy monitor attached (ST X-NUCLEO-LPM01A (PowerShield)): name the board it "
            "powers with --board (nucleo-l4r5zi measures with it)") in report.suggestion


def test_probe_target_tells_two_boards_with_one_usb_id_apart(tmp_path: Path) -> None:
    f401 = hardware_board(tmp_path, "nucleo-f401re",
                          '[pyocd]\ntarget = "stm32f401retx"\n[usb]\nvid = 0x0483\npid = 0x374B')
    boards = [*registry(), f401]
    ambiguous = discover(ports=[stlink_port()], probes=[], usb_devices=[], otii_address=None,
                         boards=boards)
    assert ambiguous.devices[0].boards == ["nucleo-l4r5zi", "nucleo-f401re"]
    assert ambiguous.board_to_measure is None
    assert "several boards match" in ambiguous.suggestion and "--board" in ambiguous.suggestion
    assert ambiguous.boards[0].also_matches == ["nucleo-f401re"]
    resolved = discover(ports=[stlink_port()], probes=[l4r5zi_probe()], usb_devices=[],
                        otii_address=None, boards=boards)
    assert resolved.devices[0].boards == ["nucleo-l4r5zi"]
    assert resolved.board_to_measure == "nucleo-l4r5zi"


def test_a_probe_without_serial_port_finds_its_board_by_target() -> None:
    report = discover(ports=[], probes=[l4r5zi_probe()], usb_devices=[], otii_address=None,
                      boards=registry())
    [status] = report.boards
    assert status.devices == [STLINK_SERIAL]
    assert status.modes["performance"].missing == ["the board's USB-UART (USB 0483:374B)"]


def test_flash_note_for_a_target_pyocd_lacks(tmp_path: Path) -> None:
    board = hardware_board(tmp_path, "odd",
                           '[pyocd]\ntarget = "nosuchchip9"\n[usb]\nvid = 0x1209\npid = 0x0003')
    builtin = hardware_board(tmp_path, "fine",
                             '[pyocd]\ntarget = "stm32l475xg"\n[usb]\nvid = 0x1209\npid = 0x0004')
    ports = [usb_port("/dev/ttyUSB0", 0x1209, 0x0003, "X", "a"),
             usb_port("/dev/ttyUSB1", 0x1209, 0x0004, "Y", "b")]
    report = discover(ports=ports, probes=[], usb_devices=[], otii_address=None,
                      boards=[board, builtin])
    notes = {s.name: s.notes for s in report.boards}
    assert notes["fine"] == []
    assert len(notes["odd"]) == 1 and "unknown pyOCD target 'nosuchchip9'" in notes["odd"][0]


@pytest.fixture
def otii_server() -> Iterator[tuple[list[bytes], tuple[str, int]]]:
    """A loopback TCP server that greets each client with the next queued banner."""
    banners: list[bytes] = []
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    address = server.getsockname()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                if stop.is_set():
                    return
                conn.sendall(banners.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield banners, address
    stop.set()
    socket.create_connection(address).close()  # wakes accept() so the thread can end
    thread.join(timeout=2)
    server.close()


def test_otii_server_is_found_by_its_banner(otii_server) -> None:
    banners, address = otii_server
    banners.append(b'{"type":"information","info":"connected","data":{"otii_version":"3.5.5",'
                   b'"protocol_version":"0.1","server":"otii-server"}}\r\n')
    banners.append(b"SSH-2.0-OpenSSH_9.6\r\n")
    report = discover(ports=[], probes=[], usb_devices=[], otii_address=address, boards=[])
    [otii] = report.devices
    assert (otii.role, otii.monitor_kind, otii.description) == (MONITOR, "otii",
                                                                "Otii server 3.5.5")
    assert otii.address == f"127.0.0.1:{address[1]}"
    [other] = discover(ports=[], probes=[], usb_devices=[], otii_address=address,
                       boards=[]).devices
    assert other.role == UNKNOWN and "does not greet like an Otii 3 server" in other.note


def closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


@pytest.fixture
def attached(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What the hardware libraries report; tests fill it in."""
    seen: dict = {"ports": [], "probes": []}
    monkeypatch.setattr(list_ports, "comports", lambda: list(seen["ports"]))
    monkeypatch.setattr(ConnectHelper, "get_all_connected_probes",
                        lambda **kw: list(seen["probes"]))
    monkeypatch.setattr(usb.core, "find", lambda **kw: iter(()))
    monkeypatch.delenv("TINYPOWER_BOARDS", raising=False)
    return seen


class PyocdProbe:
    unique_id = STLINK_SERIAL
    description = "NUCLEO-L4R5ZI [stm32l4r5zitx]"
    vendor_name = "STMicroelectronics"
    product_name = "STM32 STLink"
    associated_board_info = BoardInfo("NUCLEO-L4R5ZI", "stm32l4r5zitx")


def test_doctor_command_with_nothing_attached_exits_0(attached, capsys) -> None:
    assert main(["doctor", "--json", "--otii", closed_port()]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"] == [] and report["board_to_measure"] == "sim-m4"
    assert "virtual lab" in report["suggestion"]


def test_doctor_command_table_shows_board_and_what_is_missing(
    attached, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich's width when stdout is not a terminal
    attached["ports"] = [stlink_port(), lpm01a_port()]
    attached["probes"] = [PyocdProbe()]
    assert main(["doctor", "--otii", closed_port()]) == 0
    out = capsys.readouterr().out
    assert "nucleo-l4r5zi" in out and "/dev/ttyACM0" in out and "0483:5740" in out
    assert "missing: an IO manager for the DUT's UART" in out
    assert "found board nucleo-l4r5zi" in out
    assert main(["doctor", "--json", "--otii", closed_port()]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"][0]["usb_id"] == "0483:374B"
    assert report["devices"][0]["probe_id"] == STLINK_SERIAL
    assert report["boards"][0]["modes"]["energy"]["ready"] is False


def test_doctor_command_reports_broken_board_files_and_exits_1(
    attached, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.toml").write_text('name = "x"\nkind = \n')
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path))
    assert main(["doctor", "--json", "--otii", closed_port()]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert "broken.toml" in problem and "not valid TOML" in problem


def test_measure_without_board_says_it_uses_the_virtual_lab(attached, capsys,
                                                            tmp_path: Path) -> None:
    main(["measure", "--mode", "performance", "--iterations", "5", "--runs-dir", str(tmp_path),
          "--json"])
    captured = capsys.readouterr()
    assert "no board attached: `tinypower measure` runs on the virtual lab" in captured.err
    record = json.loads(captured.out)
    assert (record["board"], record["measured_as"]) == ("sim-m4", "simulated")


def test_measure_without_board_picks_the_attached_board(attached, capsys,
                                                        tmp_path: Path) -> None:
    attached["ports"] = [stlink_port()]
    code = main(["measure", "--mode", "performance", "--runs-dir", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert "found board nucleo-l4r5zi on /dev/ttyACM0: `tinypower measure` uses it" in err
    # The UART discovery found is not really there: refused before any session exists.
    assert code == 2 and "nucleo-l4r5zi's UART port /dev/ttyACM0 does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_measure_refuses_to_guess_between_two_boards(attached, capsys, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parents[1] / "boards" / "nucleo-l4r5zi.toml").read_text()
    (tmp_path / "a.toml").write_text(text.replace('"nucleo-l4r5zi"', '"board-a"'))
    (tmp_path / "b.toml").write_text(text.replace('"nucleo-l4r5zi"', '"board-b"'))
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path))
    attached["ports"] = [stlink_port()]
    assert main(["measure", "--runs-dir", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "several boards match what is attached (board-a, board-b)" in err


def test_local_checks_name_each_program_and_meter_and_how_to_get_it(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from energy_monitor.sim.rapl_sim import FakePowercap
    from tinypower.doctor import local_checks

    powercap = FakePowercap(tmp_path / "powercap")
    powercap.add_zone("0", "package-0", power_w=20.0)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    checks = {c.name: c for c in local_checks(powercap.root)}
    assert not checks["arm-none-eabi-gcc"].ok
    assert "gcc-arm-none-eabi" in checks["arm-none-eabi-gcc"].detail
    qemu = checks["qemu-system-arm"]
    assert not qemu.ok and "apt-get install qemu-system-arm" in qemu.detail
    assert checks["RAPL"].ok and "package-0" in checks["RAPL"].detail
    (tmp_path / "empty").mkdir()
    rapl = next(c for c in local_checks(tmp_path / "empty") if c.name == "RAPL")
    assert not rapl.ok and "no RAPL zones" in rapl.detail
    nvml = next(c for c in local_checks(powercap.root) if c.name == "NVML")
    assert nvml.ok or "NVML" in nvml.detail  # without a GPU it says why, and the fix
    kernel = checks["float32 kernel"]
    assert kernel.detail.startswith("compiled (") if kernel.ok else "reinstall" in kernel.detail
    monkeypatch.setattr("energy_monitor.trace._f32_dot", None)
    kernel = next(c for c in local_checks(powercap.root) if c.name == "float32 kernel")
    assert not kernel.ok and "install a C compiler" in kernel.detail


def test_doctor_command_reports_programs_and_meters(attached, capsys) -> None:
    assert main(["doctor", "--json", "--otii", closed_port()]) == 0
    local = {c["name"]: c for c in json.loads(capsys.readouterr().out)["local"]}
    assert {"arm-none-eabi-gcc", "qemu-system-arm", "prometheus", "RAPL", "NVML"} <= set(local)
    assert all(c["detail"] for c in local.values())
