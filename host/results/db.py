"""The result store: every :class:`ResultRecord` in one SQLite file (stdlib ``sqlite3``).

Why SQLite: one file a user can copy, query with any tool, and that needs no server. A record
is keyed by (source folder, scenario, metric), so adding the same session twice updates it
instead of counting it twice. ``tinypower measure`` adds its sessions with
:func:`add_session`; ``tinypower results`` lists, filters and exports with :func:`query`.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from tinypower.results.record import RecordError, ResultRecord, records_from_session

DEFAULT_DB = Path("runs") / "results.sqlite"
COLUMNS = tuple(f.name for f in fields(ResultRecord))
JSON_COLUMNS = ("failed_rules", "artifacts_sha256", "extras")
_NUMERIC = ("value", "energy_j", "duration_s", "work_count", "power_w", "alignment_bound_s")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    {", ".join(f"{c} {'REAL' if c in _NUMERIC else 'TEXT'}" for c in COLUMNS)},
    UNIQUE (source, scenario, metric)
)
"""
_FILTER = re.compile(r"^([a-z_0-9]+)\s*(>=|<=|!=|=|>|<)\s*(.*)$")
# The columns `tinypower results` shows, as filter keys over what they show (SQL expressions;
# text matches case-insensitively, so `label=SIMULATED` finds what the table prints).
SHOWN_KEYS = {
    "date": "replace(substr(recorded_utc, 1, 16), 'T', ' ')",  # UTC, as listed; = is a prefix
    "board": "system",
    "model": "json_extract(extras, '$.model')",
    "monitor": "meter",
    "mode": "scenario",
    "label": "measured_as",
    "session": "folder_name(source)",
}
FILTER_KEYS = (*SHOWN_KEYS, *(c for c in COLUMNS if c not in ("extras", "artifacts_sha256")))


class StoreError(ValueError):
    """The store cannot be opened or queried as asked; the message says how to fix it."""


def connect(db: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the store at ``db``."""
    path = Path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(path)
        con.create_function("folder_name", 1, lambda p: Path(p).name if p else p,
                            deterministic=True)
        con.execute(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a tinypower result store ({exc})") from None
    return con


def _row(record: ResultRecord) -> tuple:
    d = record.to_dict()
    return tuple(
        json.dumps(d[c]) if c in JSON_COLUMNS else (int(d[c]) if c == "valid" else d[c])
        for c in COLUMNS
    )


def add_records(db: Path | str, records: Iterable[ResultRecord]) -> int:
    """Insert or replace records (same source, scenario and metric); return how many."""
    rows = [_row(r) for r in records]
    with connect(db) as con:
        con.executemany(
            f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})",
            rows,
        )
    con.close()
    return len(rows)


def add_session(db: Path | str, folder: Path | str) -> list[ResultRecord]:
    """Add one ``tinypower measure`` session folder's records to the store and return them."""
    records = records_from_session(Path(folder))
    add_records(db, records)
    return records


def remove_sources(db: Path | str, sources: Iterable[Path | str]) -> int:
    """Delete the records of these session folders (``tinypower prune``); return how many."""
    if not Path(db).is_file():
        return 0
    with connect(db) as con:
        removed = sum(con.execute("DELETE FROM results WHERE source = ?", (str(s),)).rowcount
                      for s in sources)
    con.close()
    return removed


def _parse_filter(text: str) -> tuple[str, list[Any]]:
    """A filter as an SQL condition and its parameters."""
    match = _FILTER.match(text.strip())
    if not match:
        raise StoreError(f"filter {text!r} is not KEY=VALUE (or KEY>=VALUE, KEY!=VALUE, ...; "
                         "quote filters with > or <, e.g. 'value>=1000', or the shell reads a "
                         "redirect)")
    key, op, raw = match.groups()
    if key not in FILTER_KEYS:
        raise StoreError(f"cannot filter on {key!r}; filter on one of: {', '.join(FILTER_KEYS)}")
    if key == "valid":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise StoreError(f"filter {text!r}: valid is true or false (or yes, no)")
        return f"valid {op} ?", [int(raw.lower() in ("true", "1", "yes"))]
    if key in _NUMERIC:
        try:
            return f"{key} {op} ?", [float(raw)]
        except ValueError:
            raise StoreError(f"filter {text!r}: {key} is a number") from None
    if key == "failed_rules":  # one of the rules that failed (= / !=)
        if op not in ("=", "!="):
            raise StoreError(f"filter {text!r}: failed_rules takes = or != (a rule name)")
        has = "EXISTS (SELECT 1 FROM json_each(failed_rules) WHERE value = ? COLLATE NOCASE)"
        return (has if op == "=" else f"NOT {has}"), [raw]
    expr = SHOWN_KEYS.get(key, key)
    if key == "date" and op in ("=", "!="):
        return f"{expr} {'NOT ' if op == '!=' else ''}LIKE ?", [raw.replace("T", " ") + "%"]
    return f"{expr} {op} ? COLLATE NOCASE", [raw]


def query(db: Path | str, filters: Sequence[str] = ()) -> list[ResultRecord]:
    """Records matching every filter (``key=value``, ``key>=value``, ...), oldest first."""
    path = Path(db)
    if not path.is_file():
        raise StoreError(
            f"no result store at {path}: run `tinypower measure` first, or pass --db PATH"
        )
    parsed = [_parse_filter(f) for f in filters]
    where = " AND ".join(f"({condition})" for condition, _ in parsed)
    sql = f"SELECT {', '.join(COLUMNS)} FROM results" + (f" WHERE {where}" if where else "")
    con = connect(path)
    try:
        rows = con.execute(sql + " ORDER BY recorded_utc, rowid",
                           [v for _, values in parsed for v in values])
        records = [_record(row) for row in rows.fetchall()]
    finally:
        con.close()
    return records


def _record(row: Sequence[Any]) -> ResultRecord:
    d = dict(zip(COLUMNS, row, strict=True))
    for c in JSON_COLUMNS:
        d[c] = json.loads(d[c]) if d[c] else None
    d["valid"] = bool(int(d["valid"]))  # a TEXT column: 0 comes back as "0", which is truthy
    if d["work_count"] is not None:
        d["work_count"] = int(d["work_count"])
    try:
        return ResultRecord.from_dict(d)
    except (RecordError, TypeError) as exc:
        raise StoreError(f"a stored record cannot be read back ({exc})") from None


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting with ``= + - @``, a tab or a carriage
    return would be run as a formula (CSV injection), so it gets a leading ``'``. Numbers are
    written as numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(records: Sequence[ResultRecord], path: Path) -> None:
    """One row per record; list and dict fields as JSON text in their cell; text cells a
    spreadsheet would execute are neutralised (:func:`csv_cell`)."""
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in records:
            d = r.to_dict()
            writer.writerow(
                {c: csv_cell(json.dumps(d[c]) if c in JSON_COLUMNS else d[c]) for c in COLUMNS}
            )
