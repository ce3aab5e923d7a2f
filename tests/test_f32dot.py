"""The compiled float32 dot (energy_monitor/_f32dot.c) and the trace path that uses it.

Exactness is checked against ``math.fsum`` of the exact float64 products, not against
``np.einsum`` (our own other path): a float32 x float32 product is exact in float64, so the
only error allowed is float64 accumulation's, at most ``n * eps`` of the sum of magnitudes.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from energy_monitor import trace as trace_module
from energy_monitor.trace import Trace, Window, float32_kernel, integrate


@pytest.fixture(scope="module")
def f32dot():
    """The compiled module: skipped where it was not built, a failure in CI (.ci/run installs
    gcc, and setup.py builds the extension in `pip install -e .`)."""
    if float32_kernel() is None:
        why = "energy_monitor._f32dot was not built: reinstall with a C compiler (pip install -e .)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from energy_monitor import _f32dot

    return _f32dot


def exact_and_bound(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """math.fsum of the exact products, and float64 accumulation's worst error on them."""
    products = a.astype(np.float64) * b.astype(np.float64)  # exact: 48 significant bits
    magnitude = math.fsum(np.abs(products).tolist())
    return math.fsum(products.tolist()), len(a) * np.finfo(np.float64).eps * magnitude


float32_columns = st.integers(0, 200).flatmap(lambda n: st.tuples(*[
    hnp.arrays(np.float32, n, elements=st.floats(-1e6, 1e6, width=32)) for _ in range(2)]))


@settings(max_examples=300, deadline=None)
@given(float32_columns)
def test_dot_is_the_exact_products_accumulated_in_float64(f32dot, columns) -> None:
    a, b = columns
    exact, bound = exact_and_bound(a, b)
    assert abs(f32dot.dot(a, b) - exact) <= bound


def test_a_long_column_loses_no_precision_to_float32(f32dot) -> None:
    """2e6 products of ~2e-3 summed to ~1e-14 relative, where a float32 sum is good to ~1e-7 at
    best (one float32 rounding of the total), and the tail past the last 16-lane block counts."""
    rng = np.random.default_rng(7)
    a = (rng.random(2_000_003) * 1e-3).astype(np.float32)
    b = (1.8 + rng.random(2_000_003) * 1e-2).astype(np.float32)
    exact, _ = exact_and_bound(a, b)
    assert f32dot.dot(a, b) == pytest.approx(exact, rel=1e-14)
    assert f32dot.dot(a[:-3], b[:-3]) == pytest.approx(exact_and_bound(a[:-3], b[:-3])[0],
                                                       rel=1e-14)


@pytest.mark.parametrize(("a", "b", "error", "match"), [
    (np.ones(4), np.ones(4, np.float32), TypeError, "first column must be a one-dim.* float32"),
    (np.ones(4, np.float32), np.ones((2, 2), np.float32), TypeError, "second .* 2 dimension"),
    (np.ones(4, np.float32), np.ones(5, np.float32), ValueError, "differ in length .4 and 5."),
    (np.ones(8, np.float32)[::2], np.ones(4, np.float32), ValueError, "contiguous"),
    (np.ones(4, ">f4"), np.ones(4, np.float32), TypeError, "native byte order, got format '>f'"),
    (np.ones(4, np.float32), np.frombuffer(bytes(17), np.float32, offset=1), ValueError,
     "second column is not aligned"),
])
def test_dot_refuses_what_it_cannot_read_as_two_float32_columns(f32dot, a, b, error, match) -> None:
    with pytest.raises(error, match=match):
        f32dot.dot(a, b)


@pytest.mark.parametrize("order", ["<", "="])
def test_dot_reads_every_spelling_of_native_float32(f32dot, order) -> None:
    """A dtype made by ``newbyteorder("<")``, as SampleStore makes its columns', keeps the '<',
    and numpy's buffer format is then "<f", not "f" (little-endian machines only: CI's)."""
    if order == "<" and sys.byteorder != "little":
        pytest.skip("'<' is not this machine's byte order")
    dtype = np.dtype(np.float32).newbyteorder(order)
    assert f32dot.dot(np.arange(5, dtype=dtype), np.arange(5, dtype=dtype)) == 30.0


def test_a_trace_integrates_the_same_with_and_without_the_kernel(f32dot, monkeypatch) -> None:
    """Where the extension was not built, einsum gives the same energy; a strided float32
    column (not C-contiguous) takes the einsum path even where it was."""
    rng = np.random.default_rng(11)
    current = (rng.random(100_017) * 1e-3).astype(np.float32)
    voltage = (3.3 + rng.random(100_017) * 1e-2).astype(np.float32)
    window = Window(0, 0, 1, "t", 1e-5, start_index=3, end_index=100_000)
    compiled = integrate(Trace(1e5, current_a=current, voltage_v=voltage), window).energy_j
    wide_current = np.repeat(current, 2)[::2]  # the same values, every other one of a buffer
    strided = integrate(Trace(1e5, current_a=wide_current, voltage_v=voltage), window).energy_j
    monkeypatch.setattr(trace_module, "_f32_dot", None)
    einsum = integrate(Trace(1e5, current_a=current, voltage_v=voltage), window).energy_j
    exact, _ = exact_and_bound(current[3:100_000], voltage[3:100_000])
    for got in (compiled, strided, einsum):
        assert got == pytest.approx(exact / 1e5, rel=1e-14)
