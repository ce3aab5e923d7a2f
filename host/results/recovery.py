"""Sessions a dead process left ``running``, and the store rebuilt from the folders.

A ``tinypower measure`` killed with ``kill -9`` (or a power loss, a native crash) cannot mark
its session: ``session.json`` keeps saying ``running``, with the owner's pid, host and start
time. Any command that opens a runs dir notices such orphans (:func:`orphans`: the owner is
gone, or its pid now belongs to a younger process); ``tinypower recover`` (also run by
``tinypower results``) ends each one:

- if the run had scored and written ``results.json`` before it died, the session ends as
  that record says (``complete``, ``invalid`` or ``incomplete``);
- if it had measured every window, it is scored from its checkpoints: each window's holds a
  performance run's two laps and N, or an energy run's window as integrated when it ended
  (edges, samples, energy; no uncertainty budget, which the run adds when it finishes);
- otherwise it is ``incomplete``, with the reason: which process died after which checkpoint,
  and what it kept (the meter's samples and raw stream, flushed at least each second; see
  :mod:`tinypower.results.session` for the loss bound).

Then it is indexed. ``tinypower reindex`` rebuilds the store from every session folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from energy_monitor.store import DTYPES
from energy_monitor.trace import Window, WindowEnergy
from tinypower.results.db import DEFAULT_DB, StoreError, add_records
from tinypower.results.mlperf_text import results_text
from tinypower.results.record import (
    POWER_SESSION_FILE,
    TRAINING_FILE,
    RecordError,
    ResultRecord,
    records_from_session,
)
from tinypower.results.session import (
    RESERVE,
    SessionError,
    disk_error,
    owner_alive,
    sha256_file,
)
from tinypower.results.strict_json import dumps_strict
from tinypower.rules.tiny import (
    REQUIRED_WINDOWS,
    Check,
    PerfWindow,
    TinyResult,
    score_energy,
    score_performance,
)
from tinypower.terminal import shown

EXIT_USAGE = 2


@dataclass(frozen=True)
class Recovered:
    folder: Path
    status: str
    reason: str
    indexed: bool


def _session_folders(runs_dir: Path) -> Iterator[Path]:
    """Every folder under ``runs_dir`` a result record can come from."""
    if not runs_dir.is_dir():
        return
    for marker in ("session.json", POWER_SESSION_FILE, TRAINING_FILE):
        depth = marker.count("/")
        for p in sorted(runs_dir.rglob(Path(marker).name)):
            folder = p.parents[depth]
            if p.is_file() and (folder / marker) == p:
                yield folder


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def orphans(runs_dir: Path) -> list[Path]:
    """Session folders that say ``running`` although their process is gone (``runs_dir``
    itself too, when it is a session folder): ``tinypower measure`` sessions, and the power
    director's (``power/server.json``, under ``power/`` of a runs dir)."""
    if not runs_dir.is_dir():
        return []
    markers = [runs_dir / "session.json", *sorted(runs_dir.glob("*/session.json")),
               *sorted(runs_dir.glob(f"*/{POWER_SESSION_FILE}")),
               *sorted(runs_dir.glob(f"power/*/{POWER_SESSION_FILE}"))]
    found = []
    for p in markers:
        data = _read(p)
        if data and data.get("status") == "running" and owner_alive(data.get("owner")) is False:
            found.append(p.parent if p.name == "session.json" else p.parents[1])
    return found


def kept_files(folder: Path) -> str:
    """What a dead run left: samples per column (``*.f64``, ``*.f32``) and the size of each
    raw stream."""
    parts = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name == RESERVE:
            continue
        if p.suffix in DTYPES:
            parts.append(f"{p.stat().st_size // DTYPES[p.suffix].itemsize} samples in {p.name}")
        elif "raw" in p.name or p.name == "transcript.log":
            parts.append(f"{p.name} ({p.stat().st_size} bytes)")
    return ", ".join(parts) or "no measured data"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(dumps_strict(obj, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from None


def end_orphan(folder: Path) -> tuple[str, str]:
    """Mark one orphaned session as its files allow; return its new status and reason."""
    if not (folder / "session.json").is_file():
        return _end_director_orphan(folder)
    session = _read(folder / "session.json") or {}
    results = _read(folder / "results.json") or {}
    owner = session.get("owner") or {}
    who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    record = results.get("record")
    if isinstance(record, dict) and record.get("mode"):
        # It scored and wrote its result, then died while finishing: the result stands.
        status = ("incomplete" if record.get("error")
                  else "complete" if record.get("valid") else "invalid")
        reason = record.get("error") or "; ".join(
            str(f.get("message", "")) for f in record.get("failures") or []
            if isinstance(f, dict))
        reason = (f"{reason}; " if reason else "") + \
            f"recovered: its process ({who}) ended while writing the session's final state"
    elif (result := _score_from_checkpoints(session)) is not None:
        status = "complete" if result.valid else "invalid"
        reason = "; ".join(c.message for c in result.failures)
        what = "laps" if result.mode == "performance" else "window energies"
        reason = (f"{reason}; " if reason else "") + (
            f"recovered: its process ({who}) died after measuring every window; scored from "
            f"the {what} its checkpoints recorded")
        _write_result(folder, session, result, reason)
    else:
        checkpoints = session.get("checkpoints") or []
        last = checkpoints[-1].get("label") if checkpoints else None
        where = f"after checkpoint {last!r}" if last else "before its first checkpoint"
        status = "incomplete"
        reason = (f"the run's process ({who}) ended without finishing (killed or crashed) "
                  f"{where}; kept: {kept_files(folder)}")
        _write_json(folder / "results.json", {
            "record": {"suite": session.get("suite"), "mode": session.get("mode"),
                       "valid": False, "error": reason,
                       "measured_as": session.get("measured_as")},
            "windows": [], "checks": [],
        })
    (folder / RESERVE).unlink(missing_ok=True)
    session.update(status=status, reason=reason,
                   recovered_utc=datetime.now(UTC).isoformat())
    session["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                        if p.is_file() and p.name != "session.json"
                        and not p.name.endswith(".tmp")}
    _write_json(folder / "session.json", session)
    return status, reason


def _end_director_orphan(folder: Path) -> tuple[str, str]:
    """A power director that died mid-session: the session is invalid (its phases may have
    no samples or no result), with the reason; what it had written stays."""
    server = _read(folder / POWER_SESSION_FILE) or {}
    owner = server.get("owner") or {}
    phases = ", ".join(server.get("phases") or {}) or "none"
    reason = (f"the power director's process (pid {owner.get('pid', '?')} on "
              f"{owner.get('host', '?')}) ended without finishing (killed or crashed); phases "
              f"started: {phases}; what it wrote is kept")
    server["status"] = "invalid"
    server["reasons"] = [*(server.get("reasons") or []), reason]
    server["recovered_utc"] = datetime.now(UTC).isoformat()
    _write_json(folder / POWER_SESSION_FILE, server)
    return "invalid", reason


def _score_from_checkpoints(session: dict) -> TinyResult | None:
    """A run's score from its window checkpoints, when all were recorded: a performance
    run's laps, an energy run's window energies (integrated as each window ended)."""
    marks = {c.get("label"): c for c in session.get("checkpoints") or [] if isinstance(c, dict)}
    try:
        rows = [marks[f"window {k}"] for k in range(REQUIRED_WINDOWS)]
        if session.get("mode") == "performance":
            return _performance_from(rows)
        if session.get("mode") == "energy":
            return _energy_from(rows)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _performance_from(rows: list[dict]) -> TinyResult | None:
    windows = [PerfWindow(int(r["inferences"]), int(r["dut_start_lap_us"]), int(r["dut_lap_us"]))
               for r in rows]
    if any(w.elapsed_s <= 0 for w in windows):
        return None
    result = score_performance(windows)
    result.extras["iterations"] = windows[0].inferences
    return result


def _energy_from(rows: list[dict]) -> TinyResult | None:
    """Scored as the run scores its windows: a window that could not be integrated (an edge
    missing, samples lost inside it) is a failed check; no uncertainty budget (the run adds
    it from the meter's identity when it finishes)."""
    energies: list[WindowEnergy] = []
    checks: list[Check] = []
    for k, row in enumerate(rows):
        if "window_error" in row:
            checks.append(Check(f"tiny.window[{k}]", False, str(row["window_error"])))
            continue
        w = row["window"]
        start_s, end_s = float(w["start_s"]), float(w["end_s"])
        window = Window(start_s, end_s, int(w["inferences"]), "meter-edge",
                        float(w["alignment_bound_s"]), label=str(k))
        energies.append(WindowEnergy(window, float(w["energy_j"]), int(w["samples"]),
                                     end_s - start_s))
        checks.append(Check(f"tiny.window[{k}]", True, "2 edge(s) seen by this checkpoint"))
    if not energies:
        return None
    result = score_energy(energies, checks)
    result.extras["iterations"] = energies[0].window.work_count
    return result


def _write_result(folder: Path, session: dict, result: TinyResult, reason: str) -> None:
    """``results.json`` and ``results.txt`` of a run scored after its process died."""
    measured_as = session.get("measured_as") or ""
    record = {
        "suite": session.get("suite"), "mode": result.mode, "metric": result.metric,
        "value": result.value, "unit": result.unit, "valid": result.valid, "error": None,
        "failures": [c.__dict__ for c in result.failures],
        "warnings": [c.__dict__ for c in result.warnings], "measured_as": measured_as,
        "board": session.get("board"),
        "model": {"name": (session.get("config") or {}).get("model")},
        "notes": [reason], "extras": result.extras, "session": str(folder),
    }
    _write_json(folder / "results.json", {
        "record": record, "windows": result.windows,
        "checks": [c.__dict__ for c in result.checks]})
    try:
        (folder / "results.txt").write_text(results_text(result, measured_as))
    except OSError as exc:
        raise disk_error(exc, folder / "results.txt") from None


def recover(runs_dir: Path, db: Path | None = None, index: bool = True) -> list[Recovered]:
    """End every orphaned session in ``runs_dir`` and (``index``) add it to ``db`` (default:
    the runs dir's store)."""
    db = db or runs_dir / DEFAULT_DB.name
    done = []
    for folder in orphans(runs_dir):
        status, reason = end_orphan(folder)
        indexed = False
        if index:
            try:
                add_records(db, records_from_session(folder))
                indexed = True
            except (RecordError, StoreError, sqlite3.Error) as exc:
                reason = f"{reason} (not indexed: {exc}; `tinypower reindex` rebuilds the store)"
        done.append(Recovered(folder, status, reason, indexed))
    return done


def reindex(runs_dir: Path, db: Path | None = None) -> tuple[int, list[str]]:
    """Rebuild the store from the session folders under ``runs_dir`` (orphans recovered
    first); return the number of records and one line per folder that could not be read.
    The new store replaces the old one only once it is complete."""
    if not runs_dir.is_dir():
        raise SessionError(f"no runs folder at {runs_dir}: give --runs-dir")
    db = db or runs_dir / DEFAULT_DB.name
    recover(runs_dir, db, index=False)
    records: list[ResultRecord] = []
    skipped = []
    for folder in _session_folders(runs_dir):
        try:
            records += records_from_session(folder)
        except RecordError as exc:
            skipped.append(f"{folder}: {exc}")
    tmp = db.with_name(db.name + ".reindex")
    tmp.unlink(missing_ok=True)
    try:
        add_records(tmp, records)
        os.replace(tmp, db)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, db) from None
    return len(records), skipped


def notice_orphans(runs_dir: Path, err: Console) -> None:
    """One line on stderr when ``runs_dir`` holds sessions a dead process left running."""
    found = orphans(runs_dir)
    if found:
        where = found[0].parent if found == [runs_dir] else runs_dir
        err.print(f"[yellow]note:[/] {len(found)} session(s) in {shown(runs_dir)} were "
                  "left running by a process that is gone; `tinypower recover --runs-dir "
                  f"{shown(where)}` marks and indexes them", highlight=False)


def print_recovered(done: list[Recovered], err: Console) -> None:
    for r in done:
        err.print(f"recovered {shown(r.folder)}: {r.status}: {shown(r.reason)}",
                  highlight=False)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``recover`` and ``reindex`` on the ``tinypower`` subparsers."""
    for name, helptext, func in (
        ("recover", "mark and index sessions a killed or crashed run left running",
         _recover_command),
        ("reindex", "rebuild the result store from the session folders", _reindex_command),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                       help="the runs folder (default: ./runs)")
        p.add_argument("--db", type=Path,
                       help="the result store (default: results.sqlite in the runs folder)")
        p.set_defaults(func=func)


def _fail(err: Console, exc: Exception) -> int:
    err.print(f"[bold red]error:[/] {shown(exc)}", highlight=False)
    return EXIT_USAGE


def _recover_command(args: argparse.Namespace, err: Console) -> int:
    try:
        done = recover(args.runs_dir, args.db)
    except (SessionError, StoreError, OSError) as exc:
        return _fail(err, exc)
    print_recovered(done, err)
    print(f"{len(done)} session(s) recovered in {args.runs_dir}")
    return 0


def _reindex_command(args: argparse.Namespace, err: Console) -> int:
    try:
        count, skipped = reindex(args.runs_dir, args.db)
    except (SessionError, StoreError, OSError, sqlite3.Error) as exc:
        return _fail(err, exc)
    for line in skipped:
        err.print(f"[yellow]skipped:[/] {shown(line)}", highlight=False)
    print(f"{count} record(s) indexed from {args.runs_dir} into "
          f"{args.db or args.runs_dir / DEFAULT_DB.name}")
    return 0
