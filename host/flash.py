"""Flashing firmware onto a board through pyOCD.

A thin layer over pyOCD's split of probe (``ConnectHelper``), target (the session's
``target_override``) and flash (``FileProgrammer``), so the rest of tinypower never talks to
pyOCD directly and every way flashing goes wrong ends in a :class:`FlashError` that says what to
do: no probe, several probes and none chosen, a target pyOCD does not know, an image that is
missing or not what its extension says. The image and the target are checked before any probe
is touched, so a typo costs no USB round trip.

pyOCD itself is never run without hardware: tests replace ``ConnectHelper`` and
``FileProgrammer`` (the library boundary) and check the calls made.
"""

from __future__ import annotations

import difflib
import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyocd.core import exceptions as pyocd_errors
from pyocd.core.helpers import ConnectHelper
from pyocd.flash.file_programmer import FileProgrammer
from pyocd.target import TARGET, normalise_target_type_name
from pyocd.target.pack.cmsis_pack import CmsisPack
from pyocd.target.pack.pack_target import ManagedPacks

IMAGE_FORMATS = {".elf": "elf", ".axf": "elf", ".hex": "hex", ".bin": "bin"}
EM_ARM = 40  # ELF e_machine of 32-bit Arm

# progress(fraction done, 0.0 .. 1.0), as pyOCD's flash loader reports it.
FlashProgress = Callable[[float], None]

NO_PROBE_HELP = (
    "no debug probe found: plug the board's ST-LINK/J-Link/CMSIS-DAP in (a data cable, not a "
    "charge-only one), and on Linux install pyOCD's udev rules (copy "
    "https://github.com/pyocd/pyOCD/tree/main/udev/*.rules to /etc/udev/rules.d, run "
    "`sudo udevadm control --reload && sudo udevadm trigger`, replug); `pyocd list` shows what "
    "pyOCD sees"
)


class FlashError(RuntimeError):
    """Flashing or resetting could not be done; the message names the problem and the fix."""


@dataclass(frozen=True)
class ProbeInfo:
    """A connected debug probe as pyOCD reports it."""

    unique_id: str  # for ST-LINK and most CMSIS-DAP probes also the USB serial number
    description: str
    vendor: str
    product: str
    board_name: str | None = None  # the board pyOCD recognises the probe as part of, if any
    board_target: str | None = None  # that board's pyOCD target name


def list_probes() -> list[ProbeInfo]:
    """Every debug probe pyOCD can see now (never waits for one to be plugged in)."""
    try:
        probes = ConnectHelper.get_all_connected_probes(blocking=False)
    except (pyocd_errors.Error, OSError) as exc:
        raise FlashError(f"could not list debug probes ({exc}); {_usb_hint(exc)}") from exc
    return [_probe_info(p) for p in probes]


def _probe_info(probe: Any) -> ProbeInfo:
    board = probe.associated_board_info
    return ProbeInfo(
        unique_id=str(probe.unique_id),
        description=str(probe.description),
        vendor=str(probe.vendor_name),
        product=str(probe.product_name),
        board_name=board.name if board else None,
        board_target=board.target if board else None,
    )


def image_format(image: Path) -> str:
    """pyOCD's file format for an image ("elf", "hex" or "bin"), after checking its contents."""
    image = Path(image)
    fmt = IMAGE_FORMATS.get(image.suffix.lower())
    if fmt is None:
        raise FlashError(
            f"{image}: unsupported image type {image.suffix or '(no extension)'!r}; "
            "give an .elf (or .axf), .hex or .bin file"
        )
    if not image.is_file():
        raise FlashError(f"firmware image {image} not found: fix the path, or let tinypower "
                         "build and flash its benchmark firmware with `tinypower measure --board "
                         "BOARD --flash` (`tinypower build` makes the model library, not an "
                         "image)")
    data = image.read_bytes()
    if not data:
        raise FlashError(f"{image} is empty: rebuild the firmware")
    if fmt == "elf":
        _check_elf(image, data)
    elif fmt == "hex":
        _check_hex(image, data)
    return fmt


def _check_elf(image: Path, data: bytes) -> None:
    if data[:4] != b"\x7fELF":
        raise FlashError(f"{image} is not an ELF file (no ELF magic): rebuild it, or rename it "
                         "if it is really a .hex or .bin")
    if len(data) < 52 or data[4] != 1 or data[5] not in (1, 2):
        raise FlashError(f"{image}: truncated or not a 32-bit ELF; rebuild the firmware for the "
                         "board's Cortex-M core")
    (machine,) = struct.unpack_from("<H" if data[5] == 1 else ">H", data, 18)
    if machine != EM_ARM:
        raise FlashError(f"{image} is an ELF for machine {machine}, not Arm ({EM_ARM}): it was "
                         "built for another CPU; build with arm-none-eabi-gcc for the board")


def _check_hex(image: Path, data: bytes) -> None:
    lines = data.decode("ascii", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            if not line.startswith(":"):
                raise ValueError("does not start with ':'")
            record = bytes.fromhex(line[1:])
            if len(record) < 5 or len(record) != record[0] + 5:
                raise ValueError("length does not match its byte count")
            if sum(record) & 0xFF:
                raise ValueError("bad checksum")
        except ValueError as exc:
            raise FlashError(f"{image} line {number} is not a valid Intel HEX record ({exc}): "
                             "the file is corrupt; rebuild or re-download it") from exc
        if record[3] == 0x01:
            return
    raise FlashError(f"{image} has no Intel HEX end-of-file record: the file is truncated; "
                     "rebuild or re-download it")


def check_target(target: str, pack: Path | None = None) -> str:
    """The normalised pyOCD target name, if pyOCD, the given CMSIS pack or an installed pack
    provides it; otherwise a :class:`FlashError` with close names and where to get support."""
    name = normalise_target_type_name(target)
    if pack is not None:
        parts = _pack_parts(Path(pack))
        if name in parts or name in TARGET:
            return name
        raise FlashError(
            f"CMSIS pack {pack} has no device {target!r}; it provides: "
            f"{', '.join(sorted(parts)) or 'none'}. Use the pack of the board's MCU family"
        )
    if name in TARGET:
        return name
    try:
        installed = {normalise_target_type_name(d.part_number)
                     for d in ManagedPacks.get_installed_targets()}
    except Exception:  # a broken pack cache must not hide the message below
        installed = set()
    if name in installed:
        return name
    close = difflib.get_close_matches(name, list(TARGET) + sorted(installed), n=3, cutoff=0.85)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise FlashError(
        f"unknown pyOCD target {target!r}: not built into pyOCD and no installed CMSIS pack "
        f"provides it.{hint} `pyocd list --targets` lists the built-in targets; for others "
        f"install the MCU's pack (`pyocd pack install {name}`, needs network) or pass the "
        "downloaded .pack file with --pack (or `pack` in the board's [pyocd] table)"
    )


def _pack_parts(pack: Path) -> set[str]:
    if not pack.is_file():
        raise FlashError(f"CMSIS pack {pack} not found: download the MCU family's .pack "
                         "(e.g. from keil.arm.com/packs) or fix the path")
    try:
        return {normalise_target_type_name(d.part_number) for d in CmsisPack(str(pack)).devices}
    except (pyocd_errors.Error, OSError, ValueError) as exc:
        raise FlashError(f"CMSIS pack {pack} cannot be read ({exc}): download it again") from exc


def choose_probe(probe_id: str | None = None) -> ProbeInfo:
    """The one probe to use: the only one attached, or the one whose ID equals or contains
    ``probe_id``."""
    probes = list_probes()
    if not probes:
        raise FlashError(NO_PROBE_HELP)
    listing = "; ".join(f"{p.unique_id} ({p.description})" for p in probes)
    if probe_id is None:
        if len(probes) > 1:
            raise FlashError(f"{len(probes)} debug probes attached: {listing}. Choose one with "
                             "--probe ID (any unique part of its ID)")
        return probes[0]
    exact = [p for p in probes if p.unique_id.lower() == probe_id.lower()]
    matches = exact or [p for p in probes if probe_id.lower() in p.unique_id.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FlashError(f"no debug probe with ID {probe_id!r}; attached: {listing}")
    raise FlashError(f"probe ID {probe_id!r} matches {len(matches)} probes "
                     f"({', '.join(p.unique_id for p in matches)}): give more of the ID")


def flash(
    image: Path,
    target: str,
    probe_id: str | None = None,
    pack: Path | None = None,
    progress: FlashProgress | None = None,
    *,
    base_address: int | None = None,
) -> ProbeInfo:
    """Program ``image`` (.elf/.axf, .hex, or .bin at ``base_address``) into ``target`` through
    one probe, then reset the target so the new firmware runs. Returns the probe used."""
    image = Path(image)
    fmt = image_format(image)
    if fmt == "bin" and base_address is None:
        raise FlashError(f"{image} is a raw .bin: give the flash address to write it at "
                         "(--base-address, e.g. 0x08000000 for STM32 internal flash)")
    if fmt != "bin" and base_address is not None:
        raise FlashError(f"--base-address applies only to .bin images; {image} ({fmt}) "
                         "carries its own addresses")
    target_name = check_target(target, pack)
    probe = choose_probe(probe_id)
    kwargs = {"base_address": base_address} if base_address is not None else {}

    def program(session: Any) -> None:
        # A no-op callback keeps pyOCD from drawing its own progress bar on stdout.
        programmer = FileProgrammer(session, progress=progress or (lambda _f: None),
                                    chip_erase="auto", smart_flash=True)
        programmer.program(str(image), file_format=fmt, **kwargs)
        session.target.reset()

    _with_session(probe, target_name, pack, program, f"flashing {image.name}")
    return probe


def reset(target: str, probe_id: str | None = None, pack: Path | None = None) -> ProbeInfo:
    """Reset the target so its firmware starts again; returns the probe used."""
    target_name = check_target(target, pack)
    probe = choose_probe(probe_id)
    _with_session(probe, target_name, pack, lambda session: session.target.reset(), "resetting")
    return probe


def _with_session(
    probe: ProbeInfo, target: str, pack: Path | None, action: Callable[[Any], None], doing: str
) -> None:
    options = {"pack": str(pack)} if pack is not None else {}
    try:
        session = ConnectHelper.session_with_chosen_probe(
            blocking=False, return_first=True, unique_id=probe.unique_id,
            target_override=target, options=options,
        )
        if session is None:
            raise FlashError(f"debug probe {probe.unique_id} disappeared before it could be "
                             "opened: check the USB cable and try again")
        with session:
            action(session)
    except pyocd_errors.TargetSupportError as exc:
        raise FlashError(f"pyOCD cannot drive target {target!r} ({exc}); install its CMSIS "
                         "pack or pass --pack") from exc
    except pyocd_errors.FlashFailure as exc:
        raise FlashError(f"{doing} failed: the flash algorithm reported an error ({exc}); if "
                         "the chip is read-protected, unlock it (STM32CubeProgrammer option "
                         "bytes) and run `pyocd erase --chip`, then retry") from exc
    except pyocd_errors.TransferError as exc:
        raise FlashError(f"{doing} failed: lost contact with the target over SWD ({exc}); check "
                         "the board is powered and its SWD jumpers are fitted, then retry") from exc
    except (pyocd_errors.Error, OSError) as exc:
        raise FlashError(f"{doing} through probe {probe.unique_id} failed ({exc}); "
                         f"{_usb_hint(exc)}") from exc


def _usb_hint(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return ("no permission to open the USB device: install pyOCD's udev rules "
                "(https://github.com/pyocd/pyOCD/tree/main/udev) and replug")
    return "replug the probe, close other debuggers (STM32CubeIDE, OpenOCD) and retry"
