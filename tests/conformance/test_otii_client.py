"""otii-tcp-client, Qoitech's official Python client from the package index, as shipped, against
our simulated Otii 3 server on loopback: it logs in and reserves a licence its own way, sets up
the Arc (including ``arc_set_max_current``, ``arc_set_range``, ``arc_get_main_voltage``), makes a
recording and reads its data and statistics; its error paths (``Device not connected``,
``Missing key in request``, ``Invalid command``) raise its own ``Otii_Exception`` with the
server's fields, not a KeyError; and a recording made by our driver reads back through the
official client as the same samples and edges.

The client is a test dependency (the ``dev`` extra); without it the tests skip on a developer's
machine and fail when the env var CI is set.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import numpy as np
import pytest

from energy_monitor.otii import Otii
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.otii_sim import OtiiSimulator

USER, PASSWORD = "sim-user", "sim-pass"
VOLTAGE_V = 1.8
RATE_HZ = 4000
IDLE_A, ACTIVE_A = 0.0012, 0.0095


def official(module: str):
    """otii_tcp_client.<module>, or skip (fail in CI) naming the package."""
    try:
        return importlib.import_module(f"otii_tcp_client.{module}")
    except ImportError:
        why = "otii-tcp-client is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def server(monkeypatch, tmp_path) -> Iterator[tuple[OtiiSimulator, int]]:
    """The simulated server and its port; the official client finds the credentials in its
    environment variables (and no credentials.json in the working folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTII_USERNAME", USER)
    monkeypatch.setenv("OTII_PASSWORD", PASSWORD)
    sim = OtiiSimulator(LoadTimeline(VirtualClock(), IDLE_A), username=USER, password=PASSWORD)
    port = urlparse(sim.start()).port
    yield sim, port
    sim.close()


def bursts(sim: OtiiSimulator, count: int, seconds: float) -> list[float]:
    """``count`` DUT windows with 100 us low pulses around them; the falling-edge times."""
    falls = []
    timeline = sim.timeline
    for _ in range(count):
        with timeline.lock:
            t = timeline.clock.now()
            timeline.set_current(t, ACTIVE_A)
            for at in (t + 0.0005, t + 0.0005 + seconds):
                timeline.add_edge(at, "fall")
                timeline.add_edge(at + 0.0001, "rise")
                falls.append(at)
            timeline.set_current(t + 0.001 + seconds, IDLE_A)
            timeline.clock.advance(seconds + 0.002)
        time.sleep(0.01)
    return falls


def test_official_client_records_and_reads_data_and_statistics(server) -> None:
    sim, port = server
    client_module = official("otii_client")
    client = client_module.OtiiClient()
    otii = client.connect(host="127.0.0.1", port=port, try_for_seconds=2)
    try:
        assert otii.auto_logged_in and otii.auto_reserved_licenses == [1002]
        (arc,) = otii.get_devices(timeout=1)
        assert (arc.id, arc.name, arc.type) == (sim.device_id, sim.device_name, "Arc")
        arc.set_main_voltage(VOLTAGE_V)
        arc.set_max_current(0.5)
        arc.set_range("low")
        assert arc.get_main_voltage() == VOLTAGE_V
        arc.set_channel_samplerate("mc", RATE_HZ)
        arc.enable_channel("mc", True)
        arc.enable_channel("i1", True)
        arc.set_main(True)
        assert (sim.max_current_a, sim.range, sim.main_on) == (0.5, "low", True)
        project = otii.create_project()
        project.start_recording()
        falls = bursts(sim, 2, 0.25)
        project.stop_recording()
        recording = project.get_last_recording()
        info = recording.get_channel_info(arc.id, "mc")
        count = recording.get_channel_data_count(arc.id, "mc")
        data = recording.get_channel_data(arc.id, "mc", 0, count)
        stats = recording.get_channel_statistics(arc.id, "mc", info["from"], info["to"])
        pins = recording.get_channel_data(
            arc.id, "i1", 0, recording.get_channel_data_count(arc.id, "i1"))
    finally:
        client.disconnect()
    assert not sim.logged_in and not any(lic["reserved_to"] for lic in sim.licences)

    rec = sim.recording
    assert info["sample_rate"] == RATE_HZ and count == round(info["to"] * RATE_HZ)
    assert count >= 0.5 * RATE_HZ and data["data_type"] == "analog"
    assert data["timestamp"] == 0.0 and data["interval"] == 1 / RATE_HZ
    values = np.asarray(data["values"])
    truth = sim.timeline.charge_of_periods(rec.start_s, 1 / RATE_HZ, 0, count) * RATE_HZ
    assert len(values) == count and np.array_equal(values, truth)
    assert stats["average"] == pytest.approx(values.mean(), rel=1e-12)
    assert stats["charge"] == pytest.approx(values.sum() / RATE_HZ, rel=1e-12)
    assert stats["energy"] == pytest.approx(stats["charge"] * VOLTAGE_V, rel=1e-12)
    assert (stats["min"], stats["max"]) == (pytest.approx(IDLE_A), pytest.approx(ACTIVE_A))
    # GPI1: the idle level, then each pulse's fall and rise at its exact time
    assert pins["data_type"] == "digital" and pins["values"][0]["value"] is True
    got_falls = [p["timestamp"] for p in pins["values"] if p["value"] is False]
    assert got_falls == pytest.approx([t - rec.start_s for t in falls], abs=1e-9)


def test_official_client_raises_its_own_exception_for_error_replies(server) -> None:
    sim, port = server
    client_module, arc_module = official("otii_client"), official("arc")
    exception_module = official("otii_exception")
    client = client_module.OtiiClient()
    otii = client.connect(host="127.0.0.1", port=port, try_for_seconds=2)
    try:
        ghost = arc_module.Arc({"device_id": "arc-9", "name": "ghost", "type": "Arc"},
                               otii.connection)
        with pytest.raises(exception_module.Otii_Exception) as refused:
            ghost.get_version()
        assert refused.value.type == "Device not connected"
        assert 'Cannot find Arc with ID: "arc-9"' in refused.value.message
        (arc,) = otii.get_devices(timeout=1)
        with pytest.raises(exception_module.Otii_Exception) as refused:
            arc.calibrate()  # a real command this simulator does not implement
        assert refused.value.type == "Invalid command"
        assert refused.value.message == 'arc_calibrate Error: "Invalid command"'
        with pytest.raises(exception_module.Otii_Exception) as refused:
            arc.set_range("medium")
        assert refused.value.type == "Command failure" and "medium" in refused.value.message
        # No client method omits a key, so send one request without "enable" through the
        # client's own connection, and let its exception read the reply as its methods do.
        response = otii.connection.send_and_receive(
            {"type": "request", "cmd": "arc_set_main", "data": {"device_id": arc.id}})
        assert response["type"] == "error"
        refused = exception_module.Otii_Exception(response)
        assert refused.type == "Missing key in request"
        assert refused.message == (
            'arc_set_main Error: "Missing key in request"\tMissing key: "enable"')
    finally:
        client.disconnect()


def test_a_recording_by_our_driver_reads_back_the_same_through_the_official_client(
    server,
) -> None:
    sim, port = server
    client_module = official("otii_client")
    meter = Otii(f"tcp://127.0.0.1:{port}", username=USER, password=PASSWORD,
                 measured_as="simulated")
    try:
        meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        meter.start()
        bursts(sim, 2, 0.2)
        meter.wait_for_events(4, 5)
        trace = meter.stop()
    finally:
        meter.close()
    client = client_module.OtiiClient()
    otii = client.connect(host="127.0.0.1", port=port, try_for_seconds=2)
    try:
        (arc,) = otii.get_devices(timeout=1)
        recording = otii.get_active_project().get_last_recording()
        count = recording.get_channel_data_count(arc.id, "mc")
        data = recording.get_channel_data(arc.id, "mc", 0, count)
        pins = recording.get_channel_data(
            arc.id, "i1", 0, recording.get_channel_data_count(arc.id, "i1"))
    finally:
        client.disconnect()
    assert len(trace.events) == 4 and not trace.drops
    assert np.array_equal(np.asarray(data["values"]), trace.current_a)
    falls = [p["timestamp"] for p in pins["values"] if p["value"] is False]
    assert [math.floor(t * RATE_HZ + 1e-6) for t in falls] == [e.index for e in trace.events]
