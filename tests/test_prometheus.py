"""The Prometheus fleet reader against a real Prometheus server holding backfilled readings of
known energy, and the bench exporter scraped over HTTP on loopback."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_monitor.meter import MeterIdentity
from energy_monitor.prometheus import (
    FleetQuery,
    PrometheusClient,
    PrometheusError,
    PrometheusMeter,
    parse_matrix,
    read_fleet,
    time_chunks,
    with_node_matcher,
)
from energy_monitor.prometheus_export import MeasurementExporter
from energy_monitor.series import PowerSeries
from energy_monitor.sim.fleet import (
    PrometheusServer,
    ToolMissing,
    backfill,
    simulate_fleet,
    write_openmetrics,
)
from energy_monitor.trace import Trace

T0 = 1_700_006_400.0  # a 2 h block boundary
NODES = 20
NAME = "gpu-node.{:03d}:9100"  # dots and a colon: the node matcher must escape them
GAP_NODE, RESET_NODE = 5, 2


def _server_or_skip(tmp_path_factory, fleets) -> PrometheusServer:
    folder = tmp_path_factory.mktemp("prom")
    try:
        backfill(write_openmetrics(fleets, folder / "fleet.om"), folder / "tsdb")
        return PrometheusServer(folder / "tsdb")
    except ToolMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must install it: see .ci/run)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def small_fleet(tmp_path_factory):
    power = simulate_fleet(NODES, T0, 1800, kind="power", name_format=NAME,
                           gaps={GAP_NODE: [(T0 + 600, T0 + 660)]}, seed=1)
    energy = simulate_fleet(NODES, T0, 1800, kind="energy", name_format=NAME,
                            resets={RESET_NODE: [T0 + 900.4, T0 + 1200.7]}, seed=2)
    server = _server_or_skip(tmp_path_factory, [power, energy])
    yield server, power, energy
    server.stop()


def _names(n: int = NODES) -> list[str]:
    return [NAME.format(i) for i in range(n)]


def test_power_gauges_integrate_to_the_true_energy_and_the_gap_is_reported(small_fleet) -> None:
    server, power, _ = small_fleet
    start, end = T0 + 100.25, T0 + 1700.75
    result = read_fleet(PrometheusClient(server.url),
                        FleetQuery("node_power_watts", "instance", "power"), start, end,
                        _names(), measured_as="simulated")
    assert result.fetch == "raw"
    assert sorted(result.nodes) == _names() and result.missing == []
    for i, name in enumerate(_names()):
        node = result.nodes[name]
        truth = power.node(name).true_energy_j(start, end)
        if i == GAP_NODE:
            assert node.coverage < 0.97
            continue
        assert node.energy_j == pytest.approx(truth, rel=2e-4)
        assert node.coverage == 1.0
        assert node.median_interval_s == pytest.approx(1.0, abs=0.01)
        assert node.readings == pytest.approx(1600, abs=2)
    assert not result.valid
    [problem] = result.problems
    assert NAME.format(GAP_NODE) in problem and "gap of 6" in problem
    [(node_name, _, gap)] = result.gaps
    assert gap.start_s < T0 + 600 < T0 + 660 < gap.end_s and gap.duration_s < 62


def test_energy_counters_with_resets_match_the_truth(small_fleet) -> None:
    server, _, energy = small_fleet
    start, end = T0 + 60, T0 + 1740
    result = read_fleet(PrometheusClient(server.url),
                        FleetQuery("node_energy_joules_total", "instance", "energy"),
                        start, end, _names(), measured_as="simulated")
    assert result.valid, result.problems
    assert result.nodes[NAME.format(RESET_NODE)].resets == 2
    assert sum(n.resets for n in result.nodes.values()) == 2
    assert result.total_energy_j == pytest.approx(energy.true_energy_j(start, end), rel=1e-4)
    lost = energy.node(NAME.format(RESET_NODE)).true_energy_j(start, end) - \
        result.nodes[NAME.format(RESET_NODE)].energy_j
    assert 0 < lost < 2 * 1000.0  # at most the unread second before each reset


def test_missing_nodes_make_the_result_invalid_and_are_listed(small_fleet) -> None:
    server, _, _ = small_fleet
    asked = _names(3) + ["rack9-node1:9100", "gone.example:9100"]
    result = read_fleet(PrometheusClient(server.url),
                        FleetQuery("node_energy_joules_total", "instance", "energy"),
                        T0 + 60, T0 + 120, asked, measured_as="simulated")
    assert result.missing == ["rack9-node1:9100", "gone.example:9100"]
    assert sorted(result.nodes) == _names(3)
    assert not result.valid
    assert "node gone.example:9100: no readings at all" in result.problems[-1]


class CountingClient(PrometheusClient):
    """The real client, counting the requests it sends."""

    requests = 0

    def _post(self, path, params):
        self.requests += 1
        return super()._post(path, params)

    def remote_read(self, start_ms, end_ms, matchers):
        self.requests += 1
        return super().remote_read(start_ms, end_ms, matchers)


@pytest.mark.parametrize("transport", ["json", "remote-read"])
def test_chunks_and_node_batches_give_the_same_energy(small_fleet, transport) -> None:
    server, _, _ = small_fleet
    what = FleetQuery("node_energy_joules_total", "instance", "energy", transport=transport)
    whole, pieces = CountingClient(server.url), CountingClient(server.url)
    args = (T0 + 30, T0 + 1770, _names())
    one = read_fleet(whole, what, *args, measured_as="simulated")
    many = read_fleet(pieces, what, *args, measured_as="simulated",
                      points_per_request=2_000, nodes_per_query=7)
    if transport == "json":  # a one-piece remote read runs in worker processes: not counted
        assert whole.requests == 1
    assert pieces.requests == 3 * len(time_chunks(T0 - 2.5, T0 + 1802.5, 1.0, 7, 2_000))
    assert pieces.requests > 20
    for name in _names():
        assert many.nodes[name].energy_j == pytest.approx(one.nodes[name].energy_j, rel=1e-12)
        assert many.nodes[name].readings == one.nodes[name].readings


def test_time_chunks_respect_the_per_series_point_limit() -> None:
    chunks = time_chunks(0.0, 100_000.0, 1.0, series=1)
    assert chunks[0] == (0.0, 10_999.0) and chunks[-1][1] == 100_000.0
    assert all(b - a + 1 <= 11_000 for a, b in chunks)
    assert all(a == b for (_, a), (b, _) in zip(chunks[:-1], chunks[1:], strict=True))


def test_query_range_expressions_are_chunked_under_the_server_limit(small_fleet) -> None:
    server, power, _ = small_fleet
    client = PrometheusClient(server.url)
    query = "sum by (instance) (node_power_watts)"
    with pytest.raises(PrometheusError, match="11,000 points"):
        client.query_range(query, T0 + 10, T0 + 1790, 0.1)  # 17,801 points: refused
    start, end = T0 + 10, T0 + 1790
    result = read_fleet(client, FleetQuery(query, "instance", "power", step_s=0.1), start, end,
                        _names(4), measured_as="simulated", max_gap_s=1.5)
    assert result.fetch == "range" and result.valid, result.problems
    for name in _names(4):  # step-aligned evaluations hold the last reading: close, not exact
        truth = power.node(name).true_energy_j(start, end)
        assert result.nodes[name].energy_j == pytest.approx(truth, rel=5e-3)


def test_errors_name_the_problem_and_the_fix(small_fleet) -> None:
    server, _, _ = small_fleet
    with pytest.raises(PrometheusError, match="not a Prometheus URL"):
        PrometheusClient("localhost:9090")
    closed = PrometheusClient(f"http://127.0.0.1:{_closed_port()}", timeout_s=5)
    with pytest.raises(PrometheusError, match="cannot reach Prometheus"):
        read_fleet(closed, FleetQuery("up", "instance", "power"), T0, T0 + 60,
                   measured_as="simulated")
    client = PrometheusClient(server.url)
    with pytest.raises(PrometheusError, match="refused .*parse error"):
        read_fleet(client, FleetQuery("sum(node_power_watts", "instance", "power",
                                      fetch="range"), T0, T0 + 60, measured_as="simulated")
    with pytest.raises(PrometheusError, match="has no label 'hostname'"):
        read_fleet(client, FleetQuery("node_power_watts", "hostname", "power"), T0, T0 + 60,
                   measured_as="simulated")
    with pytest.raises(ValueError, match="plain selector"):
        FleetQuery("sum(node_power_watts)", "instance", "power", fetch="raw")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_node_matcher_escapes_regex_and_quotes() -> None:
    got = with_node_matcher('node_power_watts{job="pdu"}', "instance", ["a.b:9100", 'x"y'])
    assert got == 'node_power_watts{job="pdu", instance=~"a\\\\.b:9100|x\\"y"}'
    assert with_node_matcher("up", "node", ["n1"]) == 'up{node=~"n1"}'


def test_parse_matrix_reads_labels_and_special_values() -> None:
    body = (b'{"status":"success","data":{"resultType":"matrix","result":['
            b'{"metric":{"instance":"a","v":"\\"values\\":[x]]"},"values":[[1.5,"NaN"],'
            b'[2,"+Inf"],[3.25,"-4.5"]]},{"metric":{},"values":[[10,"1"]]}]}}')
    [(labels, t, v), (empty, t2, v2)] = list(parse_matrix(body))
    assert labels == {"instance": "a", "v": '"values":[x]]'}
    assert list(t) == [1.5, 2.0, 3.25] and np.isnan(v[0]) and v[1] == np.inf and v[2] == -4.5
    assert empty == {} and list(t2) == [10.0] and list(v2) == [1.0]
    with pytest.raises(PrometheusError, match="bad_data"):
        list(parse_matrix(b'{"status":"error","errorType":"bad_data","error":"x"}'))


@pytest.mark.parametrize("values", [b'[[1.5,"x"]]', b'[[1.5,"2"],[3]]', b'[[1.5,,"2"]]'])
def test_parse_matrix_refuses_readings_that_are_not_number_pairs(values: bytes) -> None:
    body = (b'{"status":"success","data":{"resultType":"matrix","result":['
            b'{"metric":{"instance":"a"},"values":' + values + b'}]}}')
    with pytest.raises(PrometheusError, match="unreadable readings"):
        list(parse_matrix(body))


@given(st.lists(st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)),
                min_size=1, max_size=50))
def test_parse_matrix_reads_back_any_finite_pairs(pairs: list[tuple[float, float]]) -> None:
    values = ",".join(f'[{t!r},"{v!r}"]' for t, v in pairs).replace("inf", "Inf")
    body = ('{"status":"success","data":{"resultType":"matrix","result":['
            '{"metric":{"instance":"a"},"values":[' + values + ']}]}}').encode()
    [(_, t, v)] = list(parse_matrix(body))
    assert list(t) == [p[0] for p in pairs] and list(v) == [p[1] for p in pairs]


def test_one_node_as_a_series_meter(small_fleet, tmp_path) -> None:
    server, power, _ = small_fleet
    times = iter([T0 + 200.0, T0 + 260.0])
    meter = PrometheusMeter(server.url, FleetQuery("node_power_watts", "instance", "power"),
                            NAME.format(1), "simulated", clock=lambda: next(times))
    assert meter.identify().model.startswith("node_power_watts instance=gpu-node.001")
    assert meter.identify().firmware.startswith("2.")
    meter.start(tmp_path)
    series = meter.stop()
    assert isinstance(series, PowerSeries) and 59 <= len(series) <= 61
    truth = power.node(NAME.format(1)).true_energy_j(T0 + 210, T0 + 250)
    assert series.energy(T0 + 210, T0 + 250, 1.5).energy_j == pytest.approx(truth, rel=1e-3)
    saved = np.loadtxt(tmp_path / "readings.csv", delimiter=",", skiprows=1)
    assert saved.shape == (len(series), 2)


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tinypower_") and "{" in line:
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = float(value)
            assert 'bench="bench-1"' in name and 'measured_as="simulated"' in name
    return out


def test_exporter_publishes_a_growing_trace_over_http() -> None:
    meter = MeterIdentity("lpm01a", "sim", "SIM-1", "1.0.6", "simulated")
    exporter = MeasurementExporter("bench-1", meter)
    try:
        power = np.full(1000, 0.002)  # 2 mW at 1 kHz
        exporter.publish_trace(Trace(1000.0, power_w=power[:400], start_time_s=5.0))
        first = _scrape(exporter.url)
        assert first["tinypower_samples_total"] == 400
        assert first["tinypower_energy_joules_total"] == pytest.approx(0.002 * 0.4)
        exporter.publish_trace(Trace(1000.0, power_w=power, start_time_s=5.0))
        later = _scrape(exporter.url)
        assert later["tinypower_samples_total"] == 1000
        assert later["tinypower_energy_joules_total"] == pytest.approx(0.002 * 1.0)
        assert later["tinypower_power_watts"] == pytest.approx(0.002)
        assert later["tinypower_last_sample_timestamp_seconds"] == pytest.approx(6.0)
        with pytest.raises(ValueError, match="only grow"):
            exporter.publish(energy_j=-1.0, power_w=0.0, samples=1, time_s=7.0)
    finally:
        exporter.close()


def test_no_matching_series_or_too_few_nodes_is_invalid_with_the_reason(small_fleet, capsys,
                                                                        tmp_path) -> None:
    import json

    from tinypower.cli import main

    server, _, _ = small_fleet
    window = [str(T0 + 60), str(T0 + 120)]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    code = main(["fleet", *runs, "--prometheus", server.url, "--query", "node_power_watts_typo",
                 "--measured-as", "simulated", "--window", *window, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and not out["valid"] and out["total_energy_j"] == 0
    assert "no series matched in the window" in out["problems"][0]
    code = main(["fleet", *runs, "--prometheus", server.url, "--query", "node_energy_joules_total",
                 "--kind", "energy", "--measured-as", "simulated", "--window", *window,
                 "--expect-nodes", str(NODES + 4), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and len(out["nodes"]) == NODES
    assert out["problems"] == [f"{NODES} node(s) have readings, {NODES + 4} expected "
                               "(--expect-nodes)"]
    code = main(["fleet", *runs, "--prometheus", server.url, "--query", "node_energy_joules_total",
                 "--kind", "energy", "--measured-as", "simulated", "--window", *window,
                 "--expect-nodes", str(NODES), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["valid"]
    # every fleet result is a session under --runs-dir, in its one store (label as measured)
    from tinypower.results.db import query

    stored = query(tmp_path / "runs" / "results.sqlite", ["scale=fleet"])
    assert [(r.valid, r.unit, r.measured_as) for r in stored] == [
        (False, "kJ", "simulated"), (False, "kJ", "simulated"), (True, "kJ", "simulated")]
    assert stored[0].failed_rules == ("fleet.readings",) and stored[0].value == 0
    assert all((Path(r.source) / "results.json").is_file() for r in stored)
