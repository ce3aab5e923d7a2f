"""ppk2-api, the vendor-style PPK2 library from the package index, as shipped, against our PPK2
simulator on a real pty: it must read the whole metadata block (every calibration constant the
simulator sends), drive the unit with its own command bytes, and decode the stream to the same
currents as our driver's decoder: bit for bit outside the spike-filter windows (ppk2-api always
filters; ours does not by default), and also inside them once our optional Nordic filter is on.

The library is a test dependency (the ``dev`` extra); without it the tests skip on a developer's
machine and fail when the env var CI is set.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_monitor.ppk2 import (
    Ppk2,
    Ppk2Calibration,
    Ppk2Decoder,
    spike_windows,
)
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.ppk2_sim import Ppk2Simulator

RATE = 100_000
SUPPLY_MV = 3300
# A calibration unlike the defaults, so a constant ppk2-api missed would show in its currents.
CALIBRATION = {
    **{f"R{r}": f"{v:.6f}" for r, v in enumerate((1029.9, 101.2, 10.21, 0.951, 0.0437))},
    **{f"GS{r}": f"{0.00012 * (r + 1):.6f}" for r in range(5)},
    **{f"GI{r}": f"{1.0 + 0.003 * r:.6f}" for r in range(5)},
    **{f"O{r}": f"{18 + 5 * r}.000000" for r in range(5)},
    **{f"S{r}": f"{0.000001 * r:.6f}" for r in range(5)},
    **{f"I{r}": f"{0.00002 * r:.6f}" for r in range(5)},
    **{f"UG{r}": f"{0.991 + 0.002 * r:.6f}" for r in range(5)},
    "HW": "9174", "IA": "61",
}
# One current per range (full scales about 0.7 mA, 7 mA, 70 mA, 0.77 A; range 4 up to 1 A).
LEVELS_A = (120e-6, 2.5e-3, 31e-3, 0.42, 0.93)


def vendor_library():
    """ppk2_api.ppk2_api, or skip (fail in CI) naming the package."""
    try:
        return importlib.import_module("ppk2_api.ppk2_api")
    except ImportError:
        why = "ppk2-api is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def sim() -> Iterator[tuple[Ppk2Simulator, str]]:
    """The simulator and the pty path a program opens. Without ``quirks`` the metadata reply is
    one write: ppk2-api keeps only the first of its reads that holds ``END``, so a test thread
    descheduled for a millisecond between its write and its first read could catch 64-byte
    packets half written (as on a loaded host with a real PPK2); in one piece it cannot."""
    simulator = Ppk2Simulator(LoadTimeline(VirtualClock(), LEVELS_A[0]), SimFaults(quirks=False),
                              metadata=CALIBRATION)
    path = simulator.start()
    yield simulator, path
    simulator.close()


def load_pattern(sim: Ppk2Simulator, seconds: float) -> None:
    """Currents that switch range often (1 to 40 samples apart, some switches back to back),
    then let ``seconds`` of virtual time pass."""
    rng = np.random.default_rng(11)
    timeline = sim.timeline
    with timeline.lock:
        t = timeline.clock.now()
        end = t + seconds
        while t < end:
            timeline.set_current(t, float(rng.choice(LEVELS_A)))
            t += int(rng.integers(1, 41)) / RATE
        timeline.clock.advance(seconds)


def read_stream(ppk2, expected_bytes: int, timeout_s: float = 10.0) -> bytes:
    """What ``get_data`` returns until ``expected_bytes`` arrived, as ppk2-api's example reads."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < expected_bytes and time.monotonic() < deadline:
        chunk = ppk2.get_data()
        if chunk != b"":
            data += chunk
        time.sleep(0.01)
    return data


def test_ppk2_api_reads_the_whole_metadata_block(sim) -> None:
    sim, path = sim
    api = vendor_library()
    ppk2 = api.PPK2_API(path, timeout=1)
    try:
        assert ppk2.get_modifiers() is True
    finally:
        ppk2.ser.close()
    assert sim.commands[-1] == b"\x19"
    for key in ("R", "GS", "GI", "O", "S", "I", "UG"):
        for r in range(5):
            assert ppk2.modifiers[key][str(r)] == float(CALIBRATION[f"{key}{r}"]), f"{key}{r}"
    assert ppk2.modifiers["Calibrated"] == "1"
    assert ppk2.modifiers["HW"] == "9174" and ppk2.modifiers["IA"] == "61"


def test_ppk2_api_currents_equal_our_decoder_outside_spike_filter_windows(sim) -> None:
    sim, path = sim
    api = vendor_library()
    ppk2 = api.PPK2_API(path, timeout=1)
    try:
        assert ppk2.get_modifiers() is True
        ppk2.use_source_meter()
        ppk2.set_source_voltage(SUPPLY_MV)
        ppk2.toggle_DUT_power("ON")
        ppk2.start_measuring()
        time.sleep(0.05)
        assert sim.streaming
        seconds = 0.2
        load_pattern(sim, seconds)
        raw = read_stream(ppk2, int(seconds * RATE) * 4)
        ppk2.stop_measuring()
        deadline = time.monotonic() + 5
        while sim.streaming and time.monotonic() < deadline:
            time.sleep(0.01)
        theirs_ua, _ = ppk2.get_samples(raw)
    finally:
        ppk2.ser.close()
    # ppk2-api's own bytes reached the simulator: source meter, 3300 mV, DUT on, start, stop
    assert sim.commands[1:6] == [b"\x11\x02", b"\x0d\x0c\xe4", b"\x0c\x01", b"\x06", b"\x07"]
    assert sim.mode == 2 and sim.regulator_mv == SUPPLY_MV and sim.dut_power
    words = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<u4")
    assert len(words) >= int(seconds * RATE) and len(theirs_ua) == len(words)
    theirs = np.asarray(theirs_ua)

    # Our driver reads the calibration from the same simulator, then decodes the same bytes.
    meter = Ppk2(path, measured_as="simulated")
    try:
        identity = meter.identify()
        calibration = meter.calibration
    finally:
        meter.close()
    assert identity.warnings == ()
    assert calibration == Ppk2Calibration.from_metadata(CALIBRATION)
    plain = Ppk2Decoder(calibration, SUPPLY_MV, "fall").feed(raw)
    filtered = Ppk2Decoder(calibration, SUPPLY_MV, "fall", spike_filter=True).feed(raw)
    assert not plain.drops and plain.received == len(words)

    ranges = ((words >> 14) & 7).astype(np.int64)
    window = spike_windows(ranges)
    assert set(ranges.tolist()) == {0, 1, 2, 3, 4}, "the load visits every range"
    assert window.sum() > 1000, "many samples sit in spike-filter windows"
    outside = ~window
    assert np.array_equal(plain.current_a[outside] * 1e6, theirs[outside])  # the same floats
    assert not np.array_equal(plain.current_a[window] * 1e6, theirs[window])  # ppk2-api filters
    # With Nordic's filter on, ours equals ppk2-api's everywhere, windows included.
    assert np.array_equal(filtered.current_a * 1e6, theirs)
    # And both are the simulated currents (exact charge per sample) to within two ADC steps.
    truth = sim.timeline.charge_per_sample(sim.acquisition_start_s, 1 / RATE, len(words)) * RATE
    step = 4 * (1.8 / 163840) / np.asarray(calibration.r)[ranges]
    assert np.all(np.abs(plain.current_a[outside] - truth[outside]) <= 2 * step[outside])


# Runs of one range, 1-6 samples long, so range switches come often and back to back.
RUNS = st.lists(st.tuples(st.integers(0, 4), st.integers(1, 6), st.integers(0, 0x3FFE)),
                min_size=1, max_size=120)


@pytest.fixture(scope="module")
def port_path() -> Iterator[str]:
    """A pty nobody answers: ppk2-api needs a port to exist, get_samples never reads it."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@settings(max_examples=60, deadline=None)
@given(runs=RUNS)
def test_our_spike_filter_is_ppk2_apis_on_any_range_sequence(port_path, runs) -> None:
    api = vendor_library()
    ranges = np.repeat([r for r, n, _ in runs], [n for _, n, _ in runs]).astype(np.uint32)
    adc = np.repeat([a for _, n, a in runs], [n for _, n, _ in runs]).astype(np.uint32)
    adc = (adc + np.arange(len(adc), dtype=np.uint32) * 37) % 0x3FFF  # vary within a run
    counter = np.arange(len(adc), dtype=np.uint32) % 64
    raw = (adc | (ranges << 14) | (counter << 18)).astype("<u4").tobytes()
    ppk2 = api.PPK2_API(port_path)  # fresh: ppk2-api keeps its filter state per instance
    try:
        ppk2.set_source_voltage(SUPPLY_MV)  # the default constants, as without metadata
        theirs, _ = ppk2.get_samples(raw)
    finally:
        ppk2.ser.close()
    ours = Ppk2Decoder(Ppk2Calibration(), SUPPLY_MV, "fall", spike_filter=True).feed(raw)
    assert np.array_equal(ours.current_a * 1e6, np.asarray(theirs))
