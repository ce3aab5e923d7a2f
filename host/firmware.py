"""Build the benchmark firmware for a board: protocol harness + board port + the model.

The firmware is three parts (``firmware/``): ``harness/`` speaks the MLPerf Tiny protocol and
converts inputs and results per suite, ``ports/<board>/`` brings one board up (startup code,
vector table, linker script, UART, timer, timestamp pin), and the model library comes from
``tinypower.codegen`` (the model as C plus the ``nn`` kernels, ``libtp_model.a``). What every
Cortex-M port shares (reset handler, fault handlers, linker sections) is ``ports/cortex-m/``.
Building takes about a second, so images are cached: the key is a hash of every input that
shapes the image (sources, codegen, compiler, flags, suite, model bytes), so an edited file or
another model gives a new build and an unchanged one is reused. One image serves every run mode: the
harness switches between performance and energy timestamps at run time (``mode`` command).
The protocol UART's baud is fixed at build time (``-DTH_UART_BAUD``): a board whose energy mode
talks through an IO manager at another baud gets one image per baud (see ``uart_baud``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tinypower import codegen
from tinypower.boards import Board
from tinypower.models import cache_dir as models_cache_dir
from tinypower.resources import data_dir
from tinypower.suites.benchmarks import Suite

FIRMWARE_DIR = data_dir("firmware")
HARNESS_DIR = FIRMWARE_DIR / "harness"
PORTS_DIR = FIRMWARE_DIR / "ports"
HARNESS_SOURCES = ("th_main.c", "th_harness.c", "th_format.c", "th_model_io.c")
PORT_SOURCES = ("startup.c", "port.c")
CORTEX_M_DIR = PORTS_DIR / "cortex-m"  # shared by every port: not a board
CORTEX_M_SOURCES = ("reset.c", "rx_ring.c")
LINK_FLAGS = ("-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
              "-Wl,--gc-sections", "-Wl,--fatal-warnings")
# What else decides the image: the code generator and the parameters it computes.
GENERATOR_SOURCES = (Path(codegen.__file__), Path(codegen.__file__).with_name("firmware_nn.py"))
ELF_NAME = "fw.elf"


class FirmwareBuildError(RuntimeError):
    """The firmware could not be built; the message says what to install or fix."""


@dataclass(frozen=True)
class Firmware:
    elf: Path
    board: str
    suite: str
    sha256: str  # of the ELF image
    cached: bool  # reused from an earlier build


def port_dir(board: Board) -> Path:
    """``firmware/ports/<board name>``: the board's startup code, linker script and drivers."""
    folder = PORTS_DIR / board.name
    if not (folder / "port.c").is_file():
        ports = ", ".join(sorted(p.parent.name for p in PORTS_DIR.glob("*/port.c")))
        raise FirmwareBuildError(
            f"no firmware port for board {board.name}: add firmware/ports/{board.name}/ "
            f"(startup.c, port.c, a linker script); ports: {ports}"
        )
    return folder


def firmware_cache_dir() -> Path:
    """Built images: beside the model cache (``$TINYPOWER_CACHE/firmware`` when set)."""
    return models_cache_dir().parent / "firmware"


def build_firmware(
    board: Board, suite: Suite, model: bytes, cache_dir: Path | None = None,
    uart_baud: int | None = None,
) -> Firmware:
    """The firmware image for ``model`` on ``board`` for ``suite``, built or from the cache.

    ``uart_baud`` is the protocol UART's rate (``-DTH_UART_BAUD``); by default the board's
    performance-mode baud. For energy mode on a board with ``[monitor] io_manager``, pass
    ``board.uart_baud["energy"]`` (the IO manager's 9600 on the reference board). Ports whose
    UART has no rate (QEMU's) ignore it.
    """
    port = port_dir(board)
    scripts = sorted(port.glob("*.ld"))
    if len(scripts) != 1:
        raise FirmwareBuildError(f"{port} must hold exactly one linker script (*.ld)")
    baud = uart_baud or board.uart_baud.get("performance")
    flags = (*codegen.WARN_FLAGS, *_arm_flags(board), f"-DTH_SUITE_{suite.name.upper()}",
             *((f"-DTH_UART_BAUD={baud}u",) if baud else ()))
    gcc = _tool("arm-none-eabi-gcc", board)
    key = _build_key(board, suite, model, flags, gcc, port)
    folder = (cache_dir or firmware_cache_dir()) / f"{board.name}-{suite.name}-{key[:16]}"
    elf = folder / ELF_NAME
    if elf.is_file():
        return Firmware(elf, board.name, suite.name, _sha256(elf.read_bytes()), True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        _build(board, model, flags, gcc, port, scripts[0], scratch)
        try:
            scratch.rename(folder)
        except OSError:  # a concurrent build got there first: its image is the same
            if not elf.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Firmware(elf, board.name, suite.name, _sha256(elf.read_bytes()), False)


def _build(
    board: Board, model: bytes, flags: tuple[str, ...], gcc: str, port: Path, script: Path,
    out: Path,
) -> None:
    model_path = out / "model.tflite"
    model_path.write_bytes(model)
    try:
        library = codegen.build(model_path, board, out / "model", toolchain="arm")
    except codegen.BUILD_ERRORS as exc:
        raise FirmwareBuildError(f"cannot build the model for {board.name}: {exc}") from exc
    sources = ([HARNESS_DIR / s for s in HARNESS_SOURCES] + [port / s for s in PORT_SOURCES]
               + [CORTEX_M_DIR / s for s in CORTEX_M_SOURCES])
    includes = ("-I", str(HARNESS_DIR), "-I", str(port), "-I", str(CORTEX_M_DIR),
                "-I", str(library.out_dir))
    command = [gcc, *flags, *includes, *map(str, sources), str(library.library),
               "-T", str(script), "-L", str(CORTEX_M_DIR), *LINK_FLAGS,
               f"-Wl,-Map={out / 'fw.map'}",
               "-o", str(out / ELF_NAME)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FirmwareBuildError(
            f"building the {board.name} firmware failed:\n{result.stderr.strip()}\n"
            f"command: {' '.join(command)}"
        )


def _arm_flags(board: Board) -> tuple[str, ...]:
    try:
        return codegen.arm_flags(board.core)
    except codegen.BuildError as exc:
        raise FirmwareBuildError(str(exc)) from None


def _tool(name: str, board: Board) -> str:
    path = shutil.which(name)
    if path is None:
        raise FirmwareBuildError(
            f"{name} not found on PATH: {codegen.ARM_INSTALL} to build firmware for {board.name}"
        )
    return path


def _build_key(
    board: Board, suite: Suite, model: bytes, flags: tuple[str, ...], gcc: str, port: Path
) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False)
    for part in (board.name, suite.name, " ".join(flags), " ".join(LINK_FLAGS), version.stdout):
        digest.update(part.encode() + b"\0")
    digest.update(_sha256(model).encode())
    files = [*HARNESS_DIR.iterdir(), *port.iterdir(), *CORTEX_M_DIR.iterdir(),
             *codegen.SOURCE_DIR.iterdir(), *GENERATOR_SOURCES]
    for path in sorted(f for f in files if f.is_file()):
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

