"""Strict JSON for everything tinypower writes: typed values stay typed.

Why: ``json.dumps(default=str)`` turned a numpy boolean ``False`` into the *string* ``"False"``,
which every reader then took as true, so a failed check looked passed in the report and in
``tinypower check``. Here numpy scalars become the Python value of the same type (``np.bool_``
a ``bool``, ``np.int64`` an ``int``), NaN and infinities become ``null`` (JSON has no NaN, and a
number that is not finite is no measurement), paths become strings, and anything else is a
``TypeError`` naming the type instead of being written as its ``repr``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (see the module docstring); raises TypeError otherwise."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [jsonable(v) for v in items]
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON: {value!r}")


def dumps_strict(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``, never with NaN."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
