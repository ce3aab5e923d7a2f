"""SampleStore: samples on disk while measuring, the same values back, memory bounded."""

from __future__ import annotations

import numpy as np
import pytest

from energy_monitor.store import BUFFER_VALUES, SampleStore


def test_file_backed_store_round_trips_and_is_readable_while_open(tmp_path) -> None:
    store = SampleStore(tmp_path / "s.f64")
    values = np.random.default_rng(0).random(3 * BUFFER_VALUES + 17)
    store.extend(values[:100].tolist())
    store.extend_array(values[100:BUFFER_VALUES])
    store.extend(values[BUFFER_VALUES:].tolist())
    assert len(store) == len(values)
    assert np.array_equal(store.array(), values)  # mid-run snapshot
    store.close()
    column = store.array()
    assert isinstance(column, np.memmap) and np.array_equal(column, values)
    assert (tmp_path / "s.f64").stat().st_size == 8 * len(values)


def test_memory_store_and_empty_store() -> None:
    store = SampleStore()
    assert len(store.array()) == 0
    store.extend([1.0, 2.0])
    store.extend_array(np.array([3.0]))
    assert store.array().tolist() == [1.0, 2.0, 3.0]


def test_float32_store_keeps_float32_and_its_suffix_says_so(tmp_path) -> None:
    store = SampleStore(tmp_path / "c.f32", np.float32)
    values = np.random.default_rng(1).random(BUFFER_VALUES + 5).astype(np.float32)
    store.extend(values[:10].tolist())
    store.extend_array(values[10:])
    store.close()
    column = store.array()
    assert column.dtype == np.float32 and np.array_equal(column, values)
    assert (tmp_path / "c.f32").stat().st_size == 4 * len(values)


def test_a_column_file_whose_suffix_names_another_type_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"c\.f64: a float32 column's file ends in \.f32"):
        SampleStore(tmp_path / "c.f64", np.float32)
    with pytest.raises(ValueError, match="float64 or float32, not int16"):
        SampleStore(None, np.int16)
