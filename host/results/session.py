"""The session folder: everything a run measured and said, kept even when the run fails.

``runs/<UTC time>-<suffix>-<board>-<suite>-<mode>/`` holds ``session.json`` (config, versions,
sha256 of model and inputs, meter identity, clock checkpoints, status), ``transcript.log``, the
meter's raw stream, ``trace.npz``, ``results.json``, ``results.txt`` and plots.

State, like a database's log: ``session.json`` is replaced atomically at each change, so it
always says one of ``running`` (with its owner: pid, host and the process's start time, so a
reader can tell a live run from one killed with ``kill -9``; see
:mod:`tinypower.results.recovery`), ``complete``, ``invalid`` (measured, a rule failed),
``incomplete`` (with the reason) or ``interrupted`` (a signal ended it).

Loss bound: the meters flush their raw stream and samples to the OS at least each second
(``energy_monitor.stream``/``store``), so a killed process loses at most the last second; each
checkpoint also fsyncs every file in the folder and the folder itself, so a power loss loses
at most what arrived since the last checkpoint (one window).

Folders are created with an exclusive ``mkdir`` under a microsecond time stamp plus a random
suffix, so concurrent runs on one runs dir never share or race for a folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tinypower.results.strict_json import dumps_strict

STATES = ("running", "complete", "invalid", "incomplete", "interrupted")
# Names that become parts of folder names: no separators, no leading dot, nothing a shell,
# a plot's mathtext or a spreadsheet would interpret.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Free space a run needs before it starts: session files, transcript and a few minutes of a
# fast meter's raw stream. A run that would not fit is refused instead of failing half-way.
MIN_FREE_BYTES = 64 * 1024 * 1024
# Test hook: ``LABEL`` or ``LABEL:SIGNAME`` sends this process SIGKILL (or SIGNAME) right after
# the checkpoint of that label is on disk, so tests reach each checkpoint of a real run
# deterministically, however fast the virtual lab is.
KILL_AT_ENV = "TINYPOWER_TEST_KILL_AT"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
RESERVE = ".reserve"
RESERVE_BYTES = 256 * 1024
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so a run ends the same way: meters stopped,
    partial data saved, session marked ``interrupted``, store updated."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupted_by(exc: BaseException) -> str:
    """``SIGTERM``/``SIGHUP`` for :class:`Interrupted`, else the user's Ctrl-C."""
    return signal.Signals(exc.signum).name if isinstance(exc, Interrupted) \
        else "the user (Ctrl-C)"


def exit_code(exc: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def terminating_signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _raise_interrupted) for s in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while a session writes its last words; they are
    delivered when the block ends."""
    held = {signal.SIGINT, *TERMINATING_SIGNALS}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


class SessionError(RuntimeError):
    """The session folder cannot be made or written; the message names the path and the fix."""


class DiskFullError(SessionError):
    """A write failed because the file system is full (ENOSPC/EDQUOT)."""


def disk_error(exc: OSError, path: Path | str) -> SessionError:
    """An OSError from writing ``path`` as a one-line :class:`SessionError`."""
    if exc.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"disk full at {path}: free some space and run again")
    return SessionError(f"cannot write {path}: {exc.strerror or exc}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, DiskFullError) or (
        isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_name(name: str, what: str) -> str:
    """``name`` if it is safe in a folder name, else a :class:`ValueError` saying why."""
    if not SAFE_NAME.match(name):
        raise ValueError(
            f"{what} {name!r} cannot be used in a folder name: use letters, digits, '.', '-' "
            "and '_' (up to 64, not starting with '.')"
        )
    return name


def folder_part(name: str) -> str:
    """``name`` as part of a folder name: characters outside the safe set become ``_`` (board
    files are checked before this; a monitored command or host name may hold anything)."""
    part = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:64]
    return part or "_"


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22),
    or None where ``/proc`` is not available. With the pid it identifies a process: a pid
    reused after a crash belongs to a process that started later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def owner_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "start_ticks": process_start_ticks(os.getpid())}


def owner_alive(owner: dict[str, Any] | None) -> bool | None:
    """Whether the process that owns a ``running`` session still runs: True, False, or None
    when that cannot be told from here (another host)."""
    if not owner or "pid" not in owner:
        return False  # written before owners were recorded: no live run can be behind it
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    ticks = process_start_ticks(pid)
    return ticks is None or owner.get("start_ticks") in (None, ticks)


def check_runs_dir(runs_dir: Path) -> None:
    """Before a command does anything: ``runs_dir`` is a writable folder, or one that can be
    made (its nearest existing parent is a writable folder). Creates nothing, so a command
    refused later leaves no trace; raises :class:`SessionError` naming the problem."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise SessionError(f"--runs-dir {runs_dir} is a file, not a folder: give a folder")
    existing = next(p for p in (runs_dir, *runs_dir.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = ("the runs folder" if existing == runs_dir
                else f"cannot create the runs folder {runs_dir}: its parent")
        raise SessionError(f"{what} {existing} is not writable: give a writable --runs-dir "
                           "or fix its permissions")


def prepare_runs_dir(runs_dir: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Check ``runs_dir`` can hold a session before anything runs: a writable folder (made if
    missing) with ``need_bytes`` free. Raises :class:`SessionError` naming the problem."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise SessionError(f"--runs-dir {runs_dir} is a file, not a folder: give a folder")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SessionError(f"cannot create the runs folder {runs_dir}: {exc.strerror or exc}; "
                           "give a writable --runs-dir") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise SessionError(f"the runs folder {runs_dir} is not writable: give a writable "
                           "--runs-dir or fix its permissions")
    free = shutil.disk_usage(runs_dir).free
    if free < need_bytes:
        raise DiskFullError(
            f"disk full at {runs_dir}: {free / 1e6:.1f} MB free, a run needs at least "
            f"{need_bytes / 1e6:.0f} MB; free some space or give another --runs-dir"
        )


def fsync_folder(folder: Path) -> None:
    """Push every file in ``folder`` and the folder's own entries to stable storage."""
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_folder(runs_dir: Path, stamp: str, name: str) -> Path:
    """A new folder ``<stamp>-<random suffix>-<name>`` made with an exclusive mkdir (never
    shared; the name stays last, so folders still end with their mode)."""
    for _ in range(100):
        folder = runs_dir / f"{stamp}-{secrets.token_hex(3)}-{name}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise disk_error(exc, folder) from None
        return folder
    raise SessionError(f"could not make a unique session folder in {runs_dir}")


class Session:
    """One run's folder and its ``session.json``."""

    def __init__(self, runs_dir: Path, board: str, suite: str, mode: str, config: dict,
                 need_bytes: int = MIN_FREE_BYTES) -> None:
        prepare_runs_dir(runs_dir, need_bytes)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = "-".join(folder_part(n) for n in (board, suite, mode))
        self.folder = _make_folder(runs_dir, stamp, name)
        self.data: dict[str, Any] = {
            "status": "running",
            "owner": owner_record(),
            "started_utc": datetime.now(UTC).isoformat(),
            "board": board,
            "suite": suite,
            "mode": mode,
            "config": config,
            "versions": {
                "tinypower": _version("tinypower"),
                "python": platform.python_version(),
                "numpy": _version("numpy"),
                "tflite-micro": _version("tflite-micro"),
                "pyserial": _version("pyserial"),
                "platform": platform.platform(),
            },
            "argv": sys.argv,
            "artifacts": {},
            "checkpoints": [],
        }
        self._after_results: list[tuple[str, Callable[[], object]]] = []
        self.save()
        # Space held back for the session's last words (results, final state) should the
        # disk fill while measuring; released by release_reserve().
        try:
            with self.path(RESERVE).open("wb") as f:
                f.write(bytes(RESERVE_BYTES))
        except OSError as exc:
            raise disk_error(exc, self.path(RESERVE)) from None

    def path(self, name: str) -> Path:
        return self.folder / name

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def checkpoint(self, label: str, **clocks: float) -> None:
        """Record where the run is, with host monotonic time and any other clocks' readings,
        and fsync the folder so a power loss keeps everything up to here."""
        self.data["checkpoints"].append(
            {"label": label, "host_monotonic_s": time.monotonic(), **clocks}
        )
        self.save()
        try:
            fsync_folder(self.folder)
        except OSError as exc:
            raise disk_error(exc, self.folder) from None
        at, _, name = os.environ.get(KILL_AT_ENV, "").partition(":")
        if at == label:
            os.kill(os.getpid(), signal.Signals[name or "SIGKILL"])

    def add_artifact(self, name: str, data: bytes) -> None:
        """Record the sha256 of an input the run depends on (model, input files)."""
        self.data["artifacts"][name] = sha256_bytes(data)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, dumps_strict(obj, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        """Write a file of the session atomically (temp file, fsync, rename)."""
        p = self.path(name)
        tmp = p.with_name(p.name + ".tmp")
        try:
            with tmp.open("w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise disk_error(exc, p) from None
        return p

    def release_reserve(self) -> None:
        self.path(RESERVE).unlink(missing_ok=True)

    def after_results(self, name: str, write: Callable[[], object]) -> None:
        """An optional artefact (a plot) to write once the result is safe on disk."""
        self._after_results.append((name, write))

    def write_after_results(self) -> list[str]:
        """Write the optional artefacts; return a note for each that failed. A failed plot
        (a full disk, a title matplotlib cannot draw) never costs the result."""
        notes = []
        for name, write in self._after_results:
            try:
                write()
            except OSError as exc:
                notes.append(f"{name} not written: {disk_error(exc, self.path(name))}")
            except Exception as exc:  # noqa: BLE001 - optional: any failure is only a note
                notes.append(f"{name} not written: {type(exc).__name__}: {exc}")
        self._after_results.clear()
        return notes

    def finish(self, status: str, reason: str = "") -> None:
        """``complete``, ``invalid``, ``incomplete`` or ``interrupted`` (with the reason);
        hash every file written."""
        if status not in STATES[1:]:
            raise ValueError(f"a session ends {', '.join(STATES[1:])}, not {status!r}")
        self.data["status"] = status
        if reason:
            self.data["reason"] = reason
        self.data["finished_utc"] = datetime.now(UTC).isoformat()
        self.data["files"] = {
            p.name: sha256_file(p)
            for p in sorted(self.folder.iterdir())
            if p.is_file() and p.name not in ("session.json", RESERVE)
            and not p.name.endswith(".tmp")
        }
        self.save()
        self.release_reserve()

    def save(self) -> None:
        self.write_json("session.json", self.data)
