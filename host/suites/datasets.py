"""Inputs for a run: an MLPerf Tiny dataset folder, or seeded synthetic inputs.

A dataset folder has the MLPerf Tiny layout: ``y_labels.csv`` (headerless
``file,classes,label[,bytes,stride]``) beside the input files. Performance and energy modes use
the first five files, as the MLCommons runner does; accuracy mode uses every file present. A
folder of ``.bin`` files without ``y_labels.csv`` gives unlabelled inputs (accuracy mode then
reports only the agreement with the host reference). With no dataset, five seeded random
inputs of the right size stand in (labelled synthetic: they measure time and energy, not
accuracy).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinypower.suites.benchmarks import Suite

SYNTHETIC_INPUTS = 5
_SEED = 20261128


class DatasetError(ValueError):
    """A dataset folder is missing, malformed or does not fit the suite."""


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes  # the whole file (AD: many windows)
    label: int | None  # None for synthetic inputs


@dataclass(frozen=True)
class Dataset:
    source: str  # "dataset" (labelled), "files" (unlabelled) or "synthetic"
    samples: list[Sample]
    listed: int  # files listed in y_labels.csv (0 for synthetic)
    path: Path | None = None

    @property
    def labelled(self) -> bool:
        return self.source == "dataset"


def synthetic_inputs(suite: Suite, count: int = SYNTHETIC_INPUTS) -> Dataset:
    rng = np.random.default_rng(_SEED)
    samples = []
    for i in range(count):
        if suite.wire_dtype == "float32":
            data = rng.normal(0.0, 1.0, suite.input_bytes // 4).astype("<f4").tobytes()
        else:
            data = rng.integers(0, 256, suite.input_bytes, dtype=np.uint8).tobytes()
        samples.append(Sample(f"synthetic_{i:03d}.bin", data, None))
    return Dataset("synthetic", samples, 0)


def load_dataset(folder: Path, suite: Suite, limit: int | None = None) -> Dataset:
    """The files of ``folder/y_labels.csv`` that are present, in list order."""
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    labels = folder / "y_labels.csv"
    if not labels.is_file():
        return _unlabelled(folder, suite, limit)
    rows = _label_rows(labels, suite)
    samples = []
    for name, label in rows:
        path = folder / name
        if path.is_dir():
            raise DatasetError(f"{path} is listed in {labels.name} as an input file but is a "
                               "folder: remove it or fix the list")
        if path.is_file():
            samples.append(Sample(name, _read(path), label))
            try:
                suite.windows_of(samples[-1].data)  # fail early on a file of the wrong size
            except ValueError as exc:
                raise DatasetError(f"{path}: {exc}") from None
            if limit is not None and len(samples) == limit:
                break
    if not samples:
        raise DatasetError(
            f"none of the {len(rows)} files listed in {labels} is in {folder}: download the "
            "dataset's input files next to y_labels.csv"
        )
    return Dataset("dataset", samples, len(rows), folder)


def _label_rows(labels: Path, suite: Suite) -> list[tuple[str, int]]:
    """``(file, label)`` of each row, each checked: a plain file name in the folder, a label
    among the suite's classes."""
    try:
        text = labels.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{labels} is not a text CSV (not UTF-8): it should hold "
                           "'file,classes,label' rows") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {labels}: {exc.strerror or exc}") from None
    if "\0" in text:
        raise DatasetError(f"{labels} is binary, not a 'file,classes,label' CSV")
    rows = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row:
            continue
        where = f"{labels}:{lineno}"
        try:
            name, label = row[0].strip(), int(row[2])
        except (IndexError, ValueError):
            raise DatasetError(
                f"{where}: expected 'file,classes,label', got {','.join(row)!r}"
            ) from None
        if not name or Path(name).name != name or name in (".", ".."):
            raise DatasetError(f"{where}: {name!r} is not a file name in the dataset folder "
                               "(no folders or '..')")
        if not 0 <= label < suite.classes:
            raise DatasetError(f"{where}: label {label} is not a {suite.name} class (expected "
                               f"0 to {suite.classes - 1})")
        rows.append((name, label))
    return rows


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def _unlabelled(folder: Path, suite: Suite, limit: int | None) -> Dataset:
    folders = [p.name for p in folder.glob("*.bin") if not p.is_file()]
    if folders:
        raise DatasetError(f"{folder}: {', '.join(sorted(folders))} is a folder, not an input "
                           "file: remove it or point --dataset at the input files")
    files = sorted(folder.glob("*.bin"))[:limit]
    if not files:
        raise DatasetError(
            f"{folder} has neither y_labels.csv nor .bin input files: point --dataset at an "
            "MLPerf Tiny dataset folder or a folder of input files"
        )
    samples = [Sample(p.name, _read(p), None) for p in files]
    for sample in samples:
        try:
            suite.windows_of(sample.data)
        except ValueError as exc:
            raise DatasetError(f"{folder / sample.name}: {exc}") from None
    return Dataset("files", samples, len(samples), folder)
