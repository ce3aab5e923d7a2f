"""The PTDaemon client against the simulated PTDaemon on loopback TCP: samples and marks,
RL fallbacks, ranges, summaries, energy against the simulator's ground truth, and faults."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_monitor.meter import MeterError
from energy_monitor.ptd import Ptd, label_sample_line, parse_sample_line
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.ptd_sim import (
    CHANNEL_PF,
    CHANNEL_SHARES,
    PtdSimulator,
    cpu_utilisation_power,
    ptd_time_text,
    start_ptd_simulator,
)
from energy_monitor.sim.tcp_lines import TcpLineServer

PERIOD_S = 0.02  # the simulator samples faster than PTD's 1 Hz so tests take a second
T0 = time.time()


def wave_w(t: float) -> float:
    return 120.0 + 30.0 * math.sin(2 * math.pi * (t - T0) / 3.0)


def wave_energy_j(a: float, b: float) -> float:
    k = 2 * math.pi / 3.0
    return 120.0 * (b - a) - 30.0 / k * (math.cos(k * (b - T0)) - math.cos(k * (a - T0)))


def measure(sim: PtdSimulator, seconds: float, folder: Path | None = None, **kw: object):
    meter = Ptd(sim.address, measured_as="simulated", poll_interval_s=0.1, timeout_s=2.0, **kw)
    try:
        meter.start(folder, mark="2025-01-01_00-00-00_testing")
        time.sleep(seconds)
        series = meter.stop()
        return meter, series
    finally:
        meter.close()


@pytest.mark.parametrize(("mode", "rl"), [("single", "RL"), ("multichannel", "RL,*,*"),
                                          ("dc", "DC-RL")])
def test_energy_matches_the_simulated_load_through_each_rl_form(
    mode: str, rl: str, tmp_path: Path
) -> None:
    with PtdSimulator(wave_w, channel_mode=mode, sample_period_s=PERIOD_S) as sim:
        meter, series = measure(sim, 1.2, tmp_path)
    assert meter._rl_form == rl
    # The fallbacks were tried in order and the working form kept.
    reads = [c for c in sim.commands if c in ("RL,*,*", "RL", "DC-RL")]
    tried = {"RL,*,*": ["RL,*,*"], "RL": ["RL,*,*", "RL"],
             "DC-RL": ["RL,*,*", "RL", "DC-RL"]}[rl]
    assert reads[: len(tried)] == tried
    assert set(reads[len(tried):]) == {rl}
    # Every sample the analyzer logged reached the driver, unchanged.
    truth_t = np.array([t for t, _ in sim.readings])
    truth_w = np.array([w for _, w in sim.readings])
    assert len(series) == len(sim.readings) > 40
    np.testing.assert_allclose(series.time_s, truth_t, atol=1e-6)
    np.testing.assert_allclose(series.power_w, truth_w, atol=1e-6)
    # Energy and mean power over a window inside the run vs the load model's exact integral.
    a, b = truth_t[2] + 0.013, truth_t[-3] - 0.007
    result = series.energy(a, b, max_gap_s=0.5)
    assert result.coverage == 1.0
    assert result.energy_j == pytest.approx(wave_energy_j(a, b), rel=0.005)
    assert result.mean_power_w == pytest.approx(wave_energy_j(a, b) / (b - a), rel=0.005)
    assert {s.mark for s in meter.samples} == {"2025-01-01_00-00-00_testing"}
    # spl.txt holds the same lines, in MLPerf's format.
    lines = (tmp_path / "spl.txt").read_text().splitlines()
    assert len(lines) == len(series)
    assert [parse_sample_line(x).watts for x in lines] == pytest.approx(list(truth_w), abs=1e-6)
    assert "Go,1000,0,2025-01-01_00-00-00_testing" in sim.commands


def test_identify_ranges_summaries_and_ranging_maxima() -> None:
    with PtdSimulator(lambda t: 200.0, sample_period_s=PERIOD_S) as sim:
        meter = Ptd(sim.address, measured_as="simulated", poll_interval_s=0.1)
        try:
            ident = meter.identify()
            assert ident.kind == "ptd" and ident.measured_as == "simulated"
            assert ident.model.startswith("YokogawaWT310 (PTDaemon 1.11.1)")
            assert ident.serial == "TINYPOWERSIM0001"
            initial = meter.read_ranges()
            assert (initial.amp_auto, initial.volt_auto) == (1, 1)
            meter.set_voltage_range("auto")
            meter.set_current_range("auto")
            meter.start(mark="s_ranging")
            time.sleep(0.4)
            meter.stop()
            volts, amps = meter.ranging_maxima()
            assert volts == pytest.approx(230.0)
            assert amps == pytest.approx(200.0 / (230.0 * 0.95), rel=1e-5)
            meter.set_voltage_range(volts)
            meter.set_current_range(amps * 1.1)
            ranges = meter.read_ranges()
            assert (ranges.amp_auto, ranges.volt_auto) == (0, 0)
            assert ranges.amp_range == pytest.approx(amps * 1.1, rel=1e-5)
            meter.start(mark="s_testing")
            time.sleep(0.4)
            series = meter.stop()
            watts = meter.watts()
            assert watts.average == pytest.approx(200.0)
            assert watts.count == len(series)
            uncertainty = meter.uncertainty()
            # fixed ranges at max V and 1.1 x max A: 0.1% of reading + 0.1% of the range's
            # volt-amperes, 1.1 x the reading's VA = 1.1 / PF x its watts
            assert uncertainty.average == pytest.approx(0.001 + 0.001 * 1.1 / 0.95, rel=1e-3)
        finally:
            meter.close()
    assert "SR,A,Auto" in sim.commands and "SR,V,230.000000" in sim.commands


def test_a_ptd_that_stops_answering_fails_clearly_and_keeps_the_samples(tmp_path: Path) -> None:
    faults = SimFaults(stall_after=15)
    with PtdSimulator(wave_w, sample_period_s=PERIOD_S, faults=faults) as sim:
        meter = Ptd(sim.address, poll_interval_s=0.1, timeout_s=0.5)
        try:
            meter.start(tmp_path)
            time.sleep(1.2)
            with pytest.raises(MeterError, match="did not answer .* samples read so far are kept"):
                meter.stop()
            kept = meter.series()
        finally:
            meter.close()
    assert 0 < len(kept) <= 15
    truth = dict(sim.readings)
    assert all(truth[t] == pytest.approx(w) for t, w in zip(kept.time_s, kept.power_w,
                                                              strict=True))
    assert len((tmp_path / "spl.txt").read_text().splitlines()) == len(kept)


def test_a_closed_connection_fails_clearly() -> None:
    with PtdSimulator(wave_w, sample_period_s=PERIOD_S,
                      faults=SimFaults(unplug_after=10)) as sim:
        meter = Ptd(sim.address, poll_interval_s=0.1, timeout_s=1.0)
        try:
            meter.start()
            time.sleep(0.8)
            with pytest.raises(MeterError, match=r"lost PTDaemon .*\(connection closed\)"):
                meter.stop()
            assert len(meter.series()) > 0
        finally:
            meter.close()


def test_garbled_bytes_are_a_malformed_reply() -> None:
    with PtdSimulator(wave_w, sample_period_s=PERIOD_S, faults=SimFaults(garble_at=5)) as sim:
        meter = Ptd(sim.address, poll_interval_s=0.1, timeout_s=1.0)
        try:
            meter.start()
            time.sleep(0.6)
            with pytest.raises(MeterError, match="malformed PTDaemon reply to 'RL"):
                meter.stop()
        finally:
            meter.close()


@pytest.mark.parametrize(
    ("replies", "match"),
    [
        ({"Hello": "SSH-2.0-OpenSSH_9.6"}, "malformed PTDaemon reply to 'Hello'"),
        ({"Identify": "YokogawaWT310"}, "malformed PTDaemon reply to 'Identify'"),
        ({"RR": "Ranges,1,2"}, "malformed PTDaemon reply to 'RR'"),
        ({"RL,*,*": "Last two samples"}, "malformed PTDaemon reply to 'RL'"),
        ({"RL,*,*": "Last 1 samples\nTime,yesterday,Watts,1"}, "bad sample time"),
        ({"RL,*,*": "Last 1 samples\nTime,01-02-2025 10:00:00.000,Volts,1"}, "no Watts"),
        ({"RL,*,*": "Last 1 samples\nTime,01-02-2025 10:00:00.000,Watts,lots"}, "not a number"),
        ({"Watts": "Watts,many"}, "malformed PTDaemon reply to 'Watts'"),
    ],
)
def test_malformed_replies_name_the_command_and_reply(replies: dict[str, str],
                                                      match: str) -> None:
    base = {"Hello": "Hello, PTDaemon here!", "Identify": "M,version=1.0-x,A;B;C;D",
            "RR": "Ranges,1,-1,1,-1", "RL,*,*": "Last 0 samples", "Watts": "Watts,1,1,1,1,0,1"}
    server = TcpLineServer(lambda line: {**base, **replies}.get(line, "Unknown command") + "\n",
                           "fake-ptd")
    host, port = server.start()
    try:
        with pytest.raises(MeterError, match=match):
            meter = Ptd(f"{host}:{port}")
            try:
                meter.identify()
                meter.read_ranges()
                meter._read_samples()
                meter.watts()
            finally:
                meter.close()
    finally:
        server.close()


def test_refused_commands_and_bad_arguments_say_the_fix() -> None:
    with PtdSimulator(wave_w, sample_period_s=PERIOD_S) as sim:
        first = Ptd(sim.address, poll_interval_s=0.1)
        second = Ptd(sim.address, poll_interval_s=0.1)
        try:
            first.start(mark="one")
            with pytest.raises(MeterError, match="refused 'Go,1000,0,two'.*Fix: stop the"):
                second.start(mark="two")
            with pytest.raises(MeterError, match="cannot hold commas"):
                second.start(mark="a,b")
            with pytest.raises(MeterError, match="positive number"):
                second.set_current_range(-1.0)
            with pytest.raises(MeterError, match="number or 'auto'"):
                second.set_voltage_range("max")
            first.stop()
        finally:
            first.close()
            second.close()


def test_unreachable_ptd_names_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MeterError, match=f"cannot reach PTDaemon at 127.0.0.1:{port}.*-p {port}"):
        Ptd(f"127.0.0.1:{port}", timeout_s=1.0)
    with pytest.raises(MeterError, match="HOST:PORT"):
        Ptd("127.0.0.1:eighty")


def test_nan_watts_are_left_out_and_counted() -> None:
    lines = ["Time,01-02-2025 10:00:00.000,Watts,10.0,Volts,230,Amps,0.1,PF,0.9,Mark,m",
             "Time,01-02-2025 10:00:01.000,Watts,nan,Volts,230,Amps,0.1,PF,0.9,Mark,m",
             "Time,01-02-2025 10:00:02.000,Watts,12.0,Volts,230,Amps,0.1,PF,0.9,Mark,m"]
    replies = {"Hello": "Hello, PTDaemon here!", "RL,*,*": "\n".join(["Last 3 samples", *lines])}
    server = TcpLineServer(lambda line: replies.get(line, "Unknown command") + "\n", "fake-ptd")
    host, port = server.start()
    try:
        meter = Ptd(f"{host}:{port}")
        meter._read_samples()
        meter.close()
    finally:
        server.close()
    assert meter.invalid_samples == 1
    assert list(meter.series().power_w) == [10.0, 12.0]


def test_sample_line_parsing_reads_real_multichannel_lines() -> None:
    # A real line from the published v2.1 Dell XR12 run (shared/mlperf-logs/power).
    line = ("Time,08-03-2022 01:13:28.797,Watts,143.610000,Volts,-1.000000,Amps,-1.000000,"
            "PF,-1.000000,Mark,2022-08-03_01-02-05_testing,Ch1,Watts,78.180000,Volts,118.650000,"
            "Amps,0.758500,PF,0.868700,Ch2,Watts,65.430000,Volts,121.050000,Amps,0.758800,"
            "PF,0.712300,Ch3,Watts,0.000000,Volts,0.000000,Amps,0.000000,PF,0.000000")
    sample = parse_sample_line(line)
    assert sample.watts == 143.61
    assert sample.time_s == pytest.approx(1659489208.797)
    assert ptd_time_text(sample.time_s) == "08-03-2022 01:13:28.797"
    assert sample.mark == "2022-08-03_01-02-05_testing"
    assert len(sample.channels) == 3
    assert (sample.max_volts, sample.max_amps) == (121.05, 0.7588)


def test_start_ptd_simulator_with_the_cpu_utilisation_model(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 1 1 1\n")
    power = cpu_utilisation_power(idle_w=10.0, busy_w=50.0, stat_path=stat)
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")  # 100 busy of 200 jiffies
    assert power(0.0) == pytest.approx(30.0)
    stat.write_text("cpu  150 0 150 1000 0 0 0 0 0 0\n")  # idle
    host, port, stop = start_ptd_simulator(lambda t: power(t), sample_period_s=PERIOD_S)
    try:
        meter = Ptd(f"{host}:{port}", poll_interval_s=0.1)
        meter.start()
        time.sleep(0.3)
        series = meter.stop()
        meter.close()
    finally:
        stop()
    assert len(series) > 5
    assert set(series.power_w) == {10.0}
    with pytest.raises(RuntimeError, match="Linux only"):
        cpu_utilisation_power(stat_path=tmp_path / "missing")


# -- multichannel analyzers -------------------------------------------------------------------

# An RL line as PTDaemon sends it (no Mark, no channel labels: power-dev's server adds both),
# a total and three channels: the numbers of the issue that found the bug.
RAW_MULTI = ("Time,08-03-2022 01:13:28.797,Watts,272.930000,Volts,-1.000000,Amps,-1.000000,"
             "PF,-1.000000,Watts,90.900000,Volts,118.650000,Amps,0.858500,PF,0.868700,"
             "Watts,91.000000,Volts,121.050000,Amps,0.958800,PF,0.712300,"
             "Watts,91.030000,Volts,120.000000,Amps,1.200000,PF,0.700000")


def test_unlabelled_multichannel_lines_keep_the_total_apart_from_the_channels() -> None:
    sample = parse_sample_line(RAW_MULTI, "s_testing")
    assert sample.watts == 272.93  # not the last channel's 91.03
    assert sample.mark == "s_testing"
    assert [c["channel"] for c in sample.channels] == [1, 2, 3]
    assert [c["Watts"] for c in sample.channels] == [90.9, 91.0, 91.03]
    # ranges come from the channels (the top level's V/A are -1), the busiest one
    assert (sample.max_volts, sample.max_amps) == (121.05, 1.2)
    # labelled the way power-dev's server writes spl.txt
    labelled = label_sample_line(RAW_MULTI, "s_testing")
    assert ",PF,-1.000000,Mark,s_testing,Ch1,Watts,90.900000," in labelled
    assert ",Ch2,Watts,91.000000," in labelled and ",Ch3,Watts,91.030000," in labelled
    assert parse_sample_line(labelled) == sample
    single = "Time,08-03-2022 01:13:28.797,Watts,22.97,Volts,227.37,Amps,0.20434,PF,0.4944"
    assert label_sample_line(single, "m") == single + ",Mark,m"


def _line(total: float, channels: list[tuple[float, float, float, float]]) -> str:
    text = f"Time,01-22-2021 15:05:14.313,Watts,{total},Volts,-1,Amps,-1,PF,-1"
    return text + "".join(f",Watts,{w},Volts,{v},Amps,{a},PF,{pf}" for w, v, a, pf in channels)


_value = st.floats(min_value=0, max_value=1e4, allow_nan=False).map(lambda x: round(x, 6))


@given(total=_value, channels=st.lists(st.tuples(_value, _value, _value, _value), max_size=4),
       mark=st.from_regex(r"[A-Za-z0-9_-]{0,20}", fullmatch=True),
       labels=st.booleans())
def test_labelled_and_unlabelled_lines_read_the_same(total, channels, mark, labels) -> None:
    raw = _line(total, channels)
    labelled = label_sample_line(raw, mark)
    assert label_sample_line(labelled, "other") == labelled  # labels are kept, not doubled
    a, b = parse_sample_line(raw, mark), parse_sample_line(labelled if labels else raw, mark)
    assert a == b
    assert a.watts == total and a.mark == mark
    assert [(c["Watts"], c["Volts"], c["Amps"], c["PF"]) for c in a.channels] == channels
    assert [c["channel"] for c in a.channels] == list(range(1, len(channels) + 1))


def test_the_multichannel_simulator_is_scored_right(tmp_path: Path) -> None:
    with PtdSimulator(wave_w, channel_mode="multichannel", sample_period_s=PERIOD_S) as sim:
        meter, series = measure(sim, 1.0, tmp_path)
        truth_w = np.array([w for _, w in sim.readings])
    # The total is the sum of the three channels, sample by sample, never one channel.
    np.testing.assert_allclose(series.power_w, truth_w, atol=1e-6)
    for n, share in enumerate(CHANNEL_SHARES, start=1):
        np.testing.assert_allclose(meter.channel_series(n).power_w, truth_w * share, atol=1e-5)
    with pytest.raises(MeterError, match="channel 4 has no samples"):
        meter.channel_series(4)
    # Ranging per channel: each channel's own peak current; the range holds the busiest.
    maxima = meter.channel_maxima()
    peak = truth_w.max()
    for n, (share, pf) in enumerate(zip(CHANNEL_SHARES, CHANNEL_PF, strict=True), start=1):
        assert maxima[n] == (pytest.approx(230.0), pytest.approx(peak * share / (230 * pf),
                                                                 rel=1e-4))
    assert meter.ranging_maxima()[1] == pytest.approx(max(a for _, a in maxima.values()))
    # spl.txt is labelled as power-dev writes it: Mark after the total, Ch1..Ch3.
    first = (tmp_path / "spl.txt").read_text().splitlines()[0]
    assert ",PF,-1.000000,Mark,2025-01-01_00-00-00_testing,Ch1,Watts," in first
    assert ",Ch2,Watts," in first and ",Ch3,Watts," in first
    # RL from the simulator is PTDaemon's: no Mark, no labels.
    assert meter.samples[0].mark == "2025-01-01_00-00-00_testing"


def test_rr_is_read_and_the_initial_ranges_restored() -> None:
    with PtdSimulator(lambda t: 50.0, sample_period_s=PERIOD_S) as sim:
        sim.current_range.auto, sim.current_range.value = False, 5.0  # the bench's own range
        meter = Ptd(sim.address, poll_interval_s=0.1)
        try:
            initial = meter.read_ranges()
            assert initial.restore_values() == ("auto", 5.0)
            meter.set_voltage_range(150.0)
            meter.set_current_range(0.5)
            meter.restore_ranges(initial)
            assert meter.identify().measured_as == "simulated"  # the simulator says so
        finally:
            meter.close()
    assert sim.commands[-3:-1] == ["SR,V,Auto", "SR,A,5.000000"]
    assert (sim.current_range.auto, sim.current_range.value) == (False, 5.0)
    assert sim.voltage_range.auto
