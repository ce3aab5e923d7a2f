"""The LPM01A's ASCII number format, shared by the driver and its simulator.

UM2269 §4.4.1: one sample is ``DDDD±EE`` = DDDD x 10^(±EE), in A (current output) or J
(energy output): ``6409-07`` = 640.9 uA, ``3333-09`` = 3.333 uJ. Four significant digits.
"""

from __future__ import annotations

import math
import re

SAMPLE_RE = re.compile(r"(\d{4})([+-]\d{2})")


def format_sample(value: float) -> str:
    """A non-negative value as ``DDDD±EE`` (four significant digits)."""
    if value <= 0:
        return "0000+00"
    exponent = math.floor(math.log10(value)) - 3
    mantissa = round(value / 10.0**exponent)
    if mantissa >= 10000:  # rounding carried into a fifth digit
        mantissa //= 10
        exponent += 1
    return f"{mantissa:04d}{exponent:+03d}"


def parse_sample(text: str) -> float:
    """``DDDD±EE`` -> float; raises ValueError on anything else."""
    m = SAMPLE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not an LPM01A sample: {text!r}")
    return float(f"{m.group(1)}e{m.group(2)}")


def format_frequency(hz: float) -> str:
    """The ``freq`` argument: ``100k``, ``1k``, ``500``."""
    if hz >= 1000 and hz % 1000 == 0:
        return f"{int(hz // 1000)}k"
    return f"{int(hz)}"


def parse_number(text: str) -> float:
    """A command argument with an SI suffix (``3300m``, ``100u``, ``1k``) or exponent (``2-3``)."""
    suffixes = {"u": 1e-6, "m": 1e-3, "k": 1e3}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    m = re.fullmatch(r"(\d+)([+-]\d+)", text)
    if m:
        return float(f"{m.group(1)}e{m.group(2)}")
    return float(text)
