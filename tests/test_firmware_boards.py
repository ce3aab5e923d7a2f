"""Firmware for the real boards (nucleo-l4r5zi, nrf52840dk): built here, checked as ELF files.

These ports run only on hardware, so what CI can check is the image: it builds with the
harness at ``-Wall -Wextra -Werror`` and the linker's ``--fatal-warnings`` (a warning fails
the build), its vector table sits at the flash origin with the initial stack pointer at the top
of RAM, a Thumb reset address inside flash and the protocol UART's handler at its interrupt
number, and every segment lies inside the board's flash and RAM as its board file states them.
The linker script's regions are read back and must agree with the board file's ``[memory]``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tinypower.boards import Board, load_board
from tinypower.firmware import PORTS_DIR, FirmwareBuildError, build_firmware
from tinypower.models import resolve_model
from tinypower.suites.benchmarks import get_suite

# Per board: flash and RAM origins (RM0432 and the nRF52840 Product Specification memory maps),
# and the protocol UART's interrupt and handler.
BOARDS = {
    "nucleo-l4r5zi": (0x0800_0000, 0x2000_0000, 70, "LPUART1_IRQHandler"),
    "nrf52840dk": (0x0000_0000, 0x2000_0000, 2, "UART0_IRQHandler"),
}
CORE_VECTORS = 16


@pytest.fixture(scope="module")
def kws_model() -> bytes:
    return resolve_model(get_suite("kws01"), "synthetic").data


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firmware")


def linker_regions(board: Board) -> dict[str, tuple[int, int]]:
    """``FLASH`` and ``RAM`` (origin, length) from the port's linker script."""
    (script,) = (PORTS_DIR / board.name).glob("*.ld")
    regions = {}
    for name, origin, length, unit in re.findall(
            r"^\s*(\w+)\s*\([rwx]+\)\s*:\s*ORIGIN\s*=\s*(0x[0-9A-Fa-f]+),\s*LENGTH\s*=\s*(\d+)"
            r"([KM]?)", script.read_text(), re.MULTILINE):
        regions[name] = (int(origin, 16), int(length) * {"": 1, "K": 1024, "M": 1 << 20}[unit])
    return regions


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_image_is_laid_out_for_the_board(arm_toolchain, kws_model, cache, name) -> None:
    board = load_board(name)
    flash_origin, ram_origin, uart_irq, uart_handler = BOARDS[name]
    assert linker_regions(board) == {"FLASH": (flash_origin, board.flash_bytes),
                                     "RAM": (ram_origin, board.ram_bytes)}
    firmware = build_firmware(board, get_suite("kws01"), kws_model, cache_dir=cache)
    flash = range(flash_origin, flash_origin + board.flash_bytes)
    ram = range(ram_origin, ram_origin + board.ram_bytes)
    with firmware.elf.open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_ARM" and elf["e_type"] == "ET_EXEC"
        symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
        vectors = elf.get_section_by_name(".isr_vector")
        assert vectors["sh_addr"] == flash_origin
        table = vectors.data()
        words = [int.from_bytes(table[i:i + 4], "little") for i in range(0, len(table), 4)]
        assert len(words) > CORE_VECTORS + uart_irq
        for n, segment in enumerate(elf.iter_segments("PT_LOAD")):
            load, size = segment["p_paddr"], segment["p_memsz"]
            if segment["p_filesz"]:  # what is flashed: code, constants, .data's initial values
                assert load in flash and load + segment["p_filesz"] - 1 in flash, n
            if segment["p_vaddr"] in ram:  # .data and .bss
                assert segment["p_vaddr"] + size - 1 in ram, n
            else:
                assert segment["p_vaddr"] == load and load + size - 1 in flash, n
    initial_sp, reset = words[0], words[1]
    assert initial_sp == ram_origin + board.ram_bytes == symbols["_estack"]
    assert reset & 1 and reset & ~1 in flash  # Thumb, in flash
    assert reset == symbols["Reset_Handler"] | 1
    assert words[CORE_VECTORS + uart_irq] == symbols[uart_handler] | 1
    assert words[2:4] == [symbols["NMI_Handler"] | 1, symbols["HardFault_Handler"] | 1]
    others = set(words[CORE_VECTORS:]) - {symbols[uart_handler] | 1}
    assert others == {symbols["Default_Handler"] | 1}  # every other interrupt reports itself
    assert symbols["_ebss"] + 4096 <= initial_sp  # the linker script's stack reserve
    assert symbols["th_port_name"] and symbols["main"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_energy_baud_builds_another_image(arm_toolchain, kws_model, cache, name) -> None:
    """One image per baud: the IO manager's 9600 (energy mode) is not the ST-LINK's 115200."""
    board = load_board(name)
    suite = get_suite("kws01")
    default = build_firmware(board, suite, kws_model, cache_dir=cache)
    energy = build_firmware(board, suite, kws_model, cache_dir=cache,
                            uart_baud=board.uart_baud["energy"])
    assert board.uart_baud == {"performance": 115200, "energy": 9600, "accuracy": 115200}
    assert energy.sha256 != default.sha256 and energy.elf != default.elf
    again = build_firmware(board, suite, kws_model, cache_dir=cache, uart_baud=115200)
    assert again.cached and again.elf == default.elf


def test_nrf_refuses_a_baud_it_has_no_register_value_for(arm_toolchain, kws_model,
                                                         tmp_path) -> None:
    with pytest.raises(FirmwareBuildError, match="TH_UART_BAUD: this port knows the nRF52840 "
                                                 "UART's register values for 115200 and 9600"):
        build_firmware(load_board("nrf52840dk"), get_suite("kws01"), kws_model,
                       cache_dir=tmp_path, uart_baud=57600)
    assert not list(tmp_path.glob("*/fw.elf"))


def test_model_too_big_for_the_board_is_refused_before_compiling(arm_toolchain, kws_model,
                                                                 tmp_path) -> None:
    small = dataclasses.replace(load_board("nucleo-l4r5zi"), ram_bytes=8192)
    with pytest.raises(FirmwareBuildError,
                       match=r"cannot build the model for nucleo-l4r5zi: model.tflite does not "
                             r"fit board nucleo-l4r5zi: its tensor arena takes [\d,]+ bytes of "
                             r"RAM, the board has 8,192"):
        build_firmware(small, get_suite("kws01"), kws_model, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.o"))


def test_ports_share_the_cortex_m_reset_code() -> None:
    """One Reset_Handler for every port: no port defines its own."""
    ports = sorted(p.parent.name for p in PORTS_DIR.glob("*/port.c"))
    assert ports == ["nrf52840dk", "nucleo-l4r5zi", "qemu-an386"]
    for port in ports:
        for source in (PORTS_DIR / port).glob("*.c"):
            assert "void Reset_Handler(void) {" not in source.read_text(), source
    assert "void Reset_Handler(void) {" in (PORTS_DIR / "cortex-m" / "reset.c").read_text()
