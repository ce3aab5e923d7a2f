"""Board registry (tinypower.boards): the shipped sim-m4 board, lookup by name or TOML path,
``$TINYPOWER_BOARDS``, the BoardError for each kind of broken file, and the cycle model's
latency formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinypower.boards import BoardError, CycleModel, available_boards, load_board

SHIPPED = Path(__file__).resolve().parents[1] / "boards" / "sim-m4.toml"

VALID = """\
name = "tmp-board"
kind = "virtual"
core = "cortex-m0"
clock_hz = 48_000_000

[cycle_model]
cycles_per_mac = 2.0
overhead_cycles = 1000

[energy_model]
idle_current_a = 0.001
io_current_a = 0.002
active_current_a = 0.003
timestamp_hold_s = 0.0001

[monitor]
kind = "lpm01a"
voltage_v = 3.3
sample_rate_hz = 10000
"""


def write_board(folder: Path, stem: str, text: str) -> Path:
    path = folder / f"{stem}.toml"
    path.write_text(text)
    return path


def test_shipped_sim_m4_loads_with_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYPOWER_BOARDS", raising=False)
    board = load_board("sim-m4")
    assert board.name == "sim-m4"
    assert board.kind == "virtual"
    assert board.measured_as == "simulated"
    assert board.core == "cortex-m4f"
    assert board.clock_hz == 120_000_000
    assert board.cycle_model == CycleModel(0.0, 0, costs="firmware")
    assert board.energy_model is not None
    assert board.energy_model.idle_current_a == 0.0012
    assert board.energy_model.io_current_a == 0.0025
    assert board.energy_model.active_current_a == 0.014571  # 26.228 mW at 1.8 V
    assert "NUCLEO_U575ZI_Q kws energy run" in board.energy_model.source
    assert board.energy_model.timestamp_hold_s == 0.0001
    assert board.uart_baud == {"performance": 115200, "energy": 9600, "accuracy": 115200}
    assert board.monitor_kind == "lpm01a"
    assert board.monitor_voltage_v == 1.8
    assert board.monitor_sample_rate_hz == 1000.0
    assert board.path == SHIPPED
    assert "sim-m4" in available_boards()


def test_boards_env_selects_the_registry_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_board(tmp_path, "zeta", VALID)
    write_board(tmp_path, "alpha", VALID)
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path))
    assert available_boards() == ["alpha", "zeta"]
    board = load_board("alpha")
    assert board.path == tmp_path / "alpha.toml"
    assert board.name == "tmp-board"  # the name inside the file, not the file's stem


def test_unknown_board_lists_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_board(tmp_path, "alpha", VALID)
    write_board(tmp_path, "beta", VALID)
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path))
    with pytest.raises(BoardError, match=r"unknown board 'nope'.*Known boards: alpha, beta"):
        load_board("nope")


def test_unknown_board_in_an_empty_registry_says_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path))
    with pytest.raises(BoardError, match="Known boards: none"):
        load_board("sim-m4")


def test_a_toml_path_loads_outside_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYPOWER_BOARDS", str(tmp_path / "empty"))
    path = write_board(tmp_path, "elsewhere", VALID)
    board = load_board(str(path))
    assert board.path == path
    assert board.clock_hz == 48_000_000
    assert board.monitor_voltage_v == 3.3
    assert board.uart_baud == {}
    assert board.description == ""


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_board(tmp_path, "broken", 'name = "x"\nkind = \n')
    with pytest.raises(BoardError, match="not valid TOML") as exc:
        load_board(str(path))
    assert str(path) in str(exc.value)


def test_non_utf8_file_is_a_board_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(BoardError, match="not valid TOML"):
        load_board(str(path))


def test_missing_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write_board(tmp_path, "nocore", VALID.replace('core = "cortex-m0"\n', ""))
    with pytest.raises(BoardError, match="core: missing") as exc:
        load_board(str(path))
    assert str(exc.value).startswith(f"{path}:")


def test_bad_kind_names_the_file_and_the_choices(tmp_path: Path) -> None:
    path = write_board(tmp_path, "badkind", VALID.replace('"virtual"', '"imaginary"'))
    with pytest.raises(
        BoardError, match="kind: expected one of virtual, emulated, hardware, found 'imaginary'"
    ) as exc:
        load_board(str(path))
    assert str(exc.value).startswith(f"{path}:")


def test_virtual_board_without_cycle_model_names_the_file(tmp_path: Path) -> None:
    text = VALID.replace("[cycle_model]\ncycles_per_mac = 2.0\noverhead_cycles = 1000\n", "")
    path = write_board(tmp_path, "nocycles", text)
    with pytest.raises(BoardError, match=r"needs \[cycle_model\] and \[energy_model\]") as exc:
        load_board(str(path))
    assert str(exc.value).startswith(f"{path}:")


def test_virtual_board_with_empty_cycle_model_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("cycles_per_mac = 2.0\noverhead_cycles = 1000\n", "")
    path = write_board(tmp_path, "emptycycles", text)
    with pytest.raises(BoardError):
        load_board(str(path))


def test_hardware_board_needs_no_models(tmp_path: Path) -> None:
    text = VALID.replace('"virtual"', '"hardware"').split("[cycle_model]")[0]
    text += '[monitor]\nkind = "lpm01a"\nvoltage_v = 3.0\nsample_rate_hz = 1000\n'
    board = load_board(str(write_board(tmp_path, "hw", text)))
    assert board.cycle_model is None
    assert board.energy_model is None
    assert board.measured_as == "hardware"


def test_latency_is_overhead_plus_macs_times_cycles_over_clock() -> None:
    model = CycleModel(cycles_per_mac=4.5, overhead_cycles=250_000)
    # (250_000 + 2_000_000 * 4.5) / 120 MHz = 9_250_000 / 120e6 s
    assert model.latency_s(2_000_000, 120_000_000) == pytest.approx(9_250_000 / 120e6)
    assert model.latency_s(0, 1_000_000) == pytest.approx(0.25)


def test_memory_is_optional_and_read_when_given(tmp_path: Path) -> None:
    assert load_board(str(write_board(tmp_path, "nomem", VALID))).flash_bytes is None
    text = VALID + "\n[memory]\nflash_bytes = 131_072\nram_bytes = 32_768\n"
    board = load_board(str(write_board(tmp_path, "mem", text)))
    assert (board.flash_bytes, board.ram_bytes) == (131_072, 32_768)


@pytest.mark.parametrize("value", ["0", "-1", '"64K"', "1.5", "true"])
def test_bad_memory_size_names_the_key(tmp_path: Path, value: str) -> None:
    path = write_board(tmp_path, "badmem", VALID + f"\n[memory]\nram_bytes = {value}\n")
    with pytest.raises(BoardError, match=r"\[memory\] ram_bytes: expected an integer "
                                         r"\(bytes\) >= 1, found") as exc:
        load_board(str(path))
    assert str(exc.value).startswith(f"{path}:")


def test_shipped_boards_state_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYPOWER_BOARDS", raising=False)
    sizes = {name: (load_board(name).flash_bytes, load_board(name).ram_bytes)
             for name in available_boards()}
    assert sizes == {
        "nrf52840dk": (1 << 20, 256 << 10),
        "nucleo-l4r5zi": (2 << 20, 640 << 10),
        "qemu-an386": (4 << 20, 4 << 20),
        "sim-m4": (2 << 20, 640 << 10),  # shaped like the reference board
    }


def test_shipped_nrf52840dk_loads_with_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYPOWER_BOARDS", raising=False)
    board = load_board("nrf52840dk")
    assert (board.kind, board.measured_as, board.core) == ("hardware", "hardware", "cortex-m4f")
    assert board.clock_hz == 64_000_000
    assert board.pyocd_target == "nrf52840" and board.pyocd_pack is None
    assert board.usb_ids == ((0x1366, 0x1015),)
    assert (board.monitor_kind, board.monitor_voltage_v) == ("ppk2", 3.0)
    assert board.monitor_sample_rate_hz == 100_000 and board.needs_io_manager
    assert board.uart_baud == {"performance": 115200, "energy": 9600, "accuracy": 115200}
