"""The MLPerf Tiny evaluation sets' label lists, shipped as package data, looked up by file name.

Why: accuracy logs name the file each result is for, and only the keyword-spotting names carry a
class (``tst_000000_Stop_7.bin``); image-classification and visual-wake-words names do not
(``emu_s_002009.bin``, ``000000343218.bin``, or ``COCO_val2014_000000343218.bin`` in one round).
The label is therefore always taken from the evaluation set's own list
(``mlcommons/tiny:benchmark/evaluation/datasets/<suite>/y_labels*.csv``, copied unchanged under
``tinypower/suites/labels/``), never parsed from the name. Some suites have more than one list
(image classification's pre-v0.7 ``6dff252`` list, anomaly detection's ``alt`` list): a log is
scored with the list that holds most of its files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

SUITES = ("kws01", "vww01", "ic01", "ad01")


@dataclass(frozen=True)
class LabelList:
    """One ``y_labels*.csv``: file name -> class, and how many classes the suite has."""

    name: str  # e.g. "ic01/y_labels.6dff252.csv"
    suite: str
    labels: dict[str, int]
    classes: int

    def lookup(self, file_name: str) -> int | None:
        """The class of ``file_name``: exact name, else the list name after a ``_`` prefix
        (``COCO_val2014_000000343218.bin`` is ``000000343218.bin``)."""
        if file_name in self.labels:
            return self.labels[file_name]
        for i, ch in enumerate(file_name):
            if ch == "_" and file_name[i + 1:] in self.labels:
                return self.labels[file_name[i + 1:]]
        return None


@cache
def label_lists() -> tuple[LabelList, ...]:
    """Every shipped list, in file-name order (so a suite's current list precedes older ones)."""
    folder = resources.files("tinypower.suites") / "labels"
    lists = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".csv"):
            continue
        suite, _, original = entry.name.partition(".")
        labels: dict[str, int] = {}
        classes = 0
        for row in csv.reader(entry.read_text(encoding="utf-8").splitlines()):
            if len(row) >= 3:
                labels[row[0].strip()] = int(row[2])
                classes = max(classes, int(row[1]))
        lists.append(LabelList(f"{suite}/{original}", suite, labels, classes))
    # The current list of a suite first: "y_labels.csv" sorts after "y_labels.6dff252.csv".
    lists.sort(key=lambda lst: (lst.suite, lst.name != f"{lst.suite}/y_labels.csv", lst.name))
    return tuple(lists)


def best_list(file_names: list[str], suite: str | None = None) -> LabelList | None:
    """The list (of ``suite``, or of any suite) holding the most of ``file_names``; of lists
    holding equally many, the shortest (a run of anomaly detection's 72-file ``alt`` list is
    complete, not 72 of 248)."""
    candidates = [lst for lst in label_lists() if suite is None or lst.suite == suite]
    if not candidates or not file_names:
        return None
    distinct = list(dict.fromkeys(file_names))
    scored = [(sum(lst.lookup(f) is not None for f in distinct), -len(lst.labels), -i, lst)
              for i, lst in enumerate(candidates)]
    hits, _, _, best = max(scored, key=lambda t: t[:3])
    return best if hits else None
