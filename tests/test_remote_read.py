"""Remote read against a real Prometheus on loopback: the chunk decoder against the server's own
chunks, the same energies and the same gap and reset reports as over the JSON API, the fallback
to JSON where a gateway refuses remote read, and clear errors for damaged streams."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_monitor import remote_read as rr
from energy_monitor.prometheus import (
    FleetQuery,
    PrometheusClient,
    PrometheusError,
    read_fleet,
    selector_matchers,
)
from energy_monitor.sim.fleet import PrometheusServer, ToolMissing, backfill, simulate_fleet
from energy_monitor.sim.fleet import write_openmetrics as write_om
from tinypower.cli import main

T0 = 1_700_006_400.0
NODES = 12
NAME = "gpu-node.{:03d}:9100"
GAP_NODE, RESET_NODE = 3, 5
START, END = T0 + 100.25, T0 + 1700.75


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote")
    power = simulate_fleet(NODES, T0, 1800, kind="power", name_format=NAME, seed=4,
                           gaps={GAP_NODE: [(T0 + 600, T0 + 640)]})
    energy = simulate_fleet(NODES, T0, 1800, kind="energy", name_format=NAME, seed=5,
                            resets={RESET_NODE: [T0 + 900.4]},
                            gaps={GAP_NODE: [(T0 + 1000, T0 + 1030)]})
    # Readings 300 s apart with two missing: a delta of delta of 600 s, more than 2**19 ms,
    # takes the 64-bit code (inside one chunk: a chunk is cut early only after 30 samples).
    far = simulate_fleet(1, T0, 3600, kind="power", name_format="far{:d}", seed=6,
                         interval_s=300, gaps={0: [(T0 + 900, T0 + 1500)]})
    far.metric = "far_power_watts"
    try:
        backfill(write_om([power, energy, far], folder / "fleet.om"), folder / "tsdb")
        server = PrometheusServer(folder / "tsdb")
    except ToolMissing as exc:
        pytest.skip(str(exc))
    yield server, power, energy, far
    server.stop()


def _names() -> list[str]:
    return [NAME.format(i) for i in range(NODES)]


def _body(url: str, metric: str, start_ms: int = 0, end_ms: int = 2**62) -> bytes:
    return rr.post_read(url, rr.read_request(start_ms, end_ms,
                                             [(rr.MATCH_EQ, "__name__", metric)]), 30)


def reference_decode(data: bytes) -> list[tuple[int, float]]:
    """One XOR chunk, bit by bit, as tsdb/chunkenc/xor.go's iterator reads it: slow and plain,
    to check the lockstep decoder against."""
    bits, total, pos = int.from_bytes(data[2:], "big"), 8 * (len(data) - 2), 0

    def read(k: int) -> int:
        nonlocal pos
        pos += k
        return (bits >> (total - pos)) & ((1 << k) - 1)

    def varint() -> int:
        value = shift = 0
        while True:
            byte = read(8)
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    out: list[tuple[int, float]] = []
    t = delta = value = leading = trailing = 0
    for i in range(int.from_bytes(data[:2], "big")):
        if i == 0:
            u = varint()
            t, value = (u >> 1) ^ -(u & 1), read(64)
        else:
            if i == 1:
                delta = varint()
            else:
                prefix = 0
                for _ in range(4):
                    prefix <<= 1
                    if not read(1):
                        break
                    prefix |= 1
                size = {0: 0, 0b10: 14, 0b110: 17, 0b1110: 20, 0b1111: 64}[prefix]
                dod = read(size)
                if size == 64 and dod >> 63:
                    dod -= 1 << 64
                elif 0 < size < 64 and dod > 1 << (size - 1):
                    dod -= 1 << size
                delta += dod
            t += delta
            if read(1):
                if read(1):
                    leading, significant = read(5), read(6) or 64
                    trailing = 64 - leading - significant
                value ^= read(64 - leading - trailing) << trailing
        out.append((t, struct.unpack(">d", value.to_bytes(8, "big"))[0]))
    return out


@pytest.mark.parametrize("metric", ["node_power_watts", "node_energy_joules_total",
                                    "far_power_watts"])
def test_lockstep_decoder_reads_prometheus_chunks_as_its_iterator_does(fleet, metric) -> None:
    server = fleet[0]
    body = _body(server.url, metric)
    stream = rr.split_stream(body)
    decoded = rr.decode_chunks(body, stream.starts, stream.ends)
    want = [s for a, b in zip(stream.starts, stream.ends, strict=True)
            for s in reference_decode(body[a:b])]
    assert decoded.time_ms.tolist() == [t for t, _ in want]
    assert decoded.value.tolist() == [v for _, v in want]
    if metric == "far_power_watts":
        assert np.max(np.diff(np.diff(decoded.time_ms))) > 2**19
    samples = rr.decode_stream(body, 0, 2**62)
    sim = {"node_power_watts": fleet[1], "node_energy_joules_total": fleet[2],
           "far_power_watts": fleet[3]}[metric]
    assert len(samples.labels) == len(sim.nodes)
    for labels, lo, hi in zip(samples.labels, samples.lo, samples.hi, strict=True):
        node = sim.node(labels[sim.label])
        assert samples.time_ms[lo:hi].tolist() == np.round(node.time_s * 1000).astype(
            np.int64).tolist()
        assert np.allclose(samples.value[lo:hi], node.value, rtol=0, atol=1e-9)


# Readings 300 s apart whose deltas of delta sit on each width's edges (tsdb/chunkenc/xor.go
# bitRange: -(2**(n-1) - 1) .. 2**(n-1)) and just past the 20-bit one, with values that
# repeat, flip sign (64 significant bits) and span the exponent range.
EDGE_DODS_MS = [8192, -8191, 65536, -65535, 524288, -524287, 524289, -524289, 0, 1, -1]
EDGE_VALUES = [1.0, 1.0, -2.5, 1e300, 1e-300, 3.14159, 3.14159, 0.0, -0.0, 123.456, 5e-324,
               2.0, 1.5]


def test_delta_of_delta_edges_and_odd_values_decode_exactly(tmp_path) -> None:
    delta, times = 300_000, [int(T0 * 1000), int(T0 * 1000) + 300_000]
    for dod in EDGE_DODS_MS:
        delta += dod
        times.append(times[-1] + delta)
    lines = [f'edge_power_watts{{instance="e"}} {v!r} {t / 1000:.3f}\n'
             for t, v in zip(times, EDGE_VALUES, strict=True)]
    (tmp_path / "edge.om").write_text("# TYPE edge_power_watts gauge\n" + "".join(lines)
                                      + "# EOF\n")
    try:
        backfill(tmp_path / "edge.om", tmp_path / "tsdb")
        server = PrometheusServer(tmp_path / "tsdb")
    except ToolMissing as exc:
        pytest.skip(str(exc))
    try:
        body = _body(server.url, "edge_power_watts")
    finally:
        server.stop()
    stream = rr.split_stream(body)
    assert len(stream.starts) == 1  # one chunk holds them all
    decoded = rr.decode_chunks(body, stream.starts, stream.ends)
    assert decoded.time_ms.tolist() == times
    assert [struct.pack(">d", v) for v in decoded.value] == [struct.pack(">d", v)
                                                             for v in EDGE_VALUES]
    assert reference_decode(body[stream.starts[0]:stream.ends[0]]) == list(
        zip(times, EDGE_VALUES, strict=True))


def test_samples_are_cut_to_the_asked_range(fleet) -> None:
    server = fleet[0]
    lo_ms, hi_ms = int(START * 1000), int(END * 1000)
    samples = rr.decode_stream(_body(server.url, "node_power_watts", lo_ms, hi_ms),
                               lo_ms, hi_ms)
    for lo, hi in zip(samples.lo, samples.hi, strict=True):
        times = samples.time_ms[lo:hi]
        assert times[0] >= lo_ms and times[-1] <= hi_ms and times[0] - lo_ms < 1100


@pytest.mark.parametrize("kind,metric", [("power", "node_power_watts"),
                                         ("energy", "node_energy_joules_total")])
def test_remote_read_reports_what_json_reports_to_the_bit(fleet, kind, metric) -> None:
    client = PrometheusClient(fleet[0].url)
    got = {}
    for transport in ("remote-read", "json"):
        result = read_fleet(client, FleetQuery(metric, "instance", kind, transport=transport),
                            START, END, _names() + ["absent"], measured_as="simulated")
        assert result.transport == transport
        got[transport] = {k: v for k, v in result.to_dict().items() if k != "transport"}
        got[transport]["gaps"] = result.gaps
    remote, js = got["remote-read"], got["json"]
    assert remote == js
    assert remote["missing"] == ["absent"] and not remote["valid"]
    assert [name for name, _, _ in remote["gaps"]] == [NAME.format(GAP_NODE)]
    if kind == "energy":
        assert remote["nodes"][NAME.format(RESET_NODE)]["resets"] == 1


def test_matchers_and_batches_select_the_same_series(fleet) -> None:
    client = PrometheusClient(fleet[0].url)
    query = ('node_power_watts{instance=~"gpu-node\\\\.00(0|1|2|3|4):9100", '
             f'instance!="{NAME.format(1)}"}}')
    one = read_fleet(client, FleetQuery(query, "instance", "power"), START, END,
                     measured_as="simulated")
    assert one.transport == "remote-read"
    assert sorted(one.nodes) == [NAME.format(i) for i in (0, 2, 3, 4)]
    js = read_fleet(client, FleetQuery(query, "instance", "power", transport="json"), START,
                    END, measured_as="simulated")
    assert one.total_energy_j == js.total_energy_j
    batched = read_fleet(client, FleetQuery("node_power_watts", "instance", "power"), START,
                         END, _names(), measured_as="simulated", nodes_per_query=5,
                         points_per_request=5_000)
    whole = read_fleet(client, FleetQuery("node_power_watts", "instance", "power"), START,
                       END, _names(), measured_as="simulated")
    assert batched.to_dict() == whole.to_dict()


def test_selector_matchers_follow_promql_quoting() -> None:
    assert selector_matchers('m{a="x\\\\.y", b!~`c\\d`, c!=\'q"\'}') == [
        (rr.MATCH_EQ, "__name__", "m"), (rr.MATCH_EQ, "a", "x\\.y"),
        (rr.MATCH_NRE, "b", "c\\d"), (rr.MATCH_NEQ, "c", 'q"')]
    assert selector_matchers('{__name__="m", job="pdu",}') == [
        (rr.MATCH_EQ, "__name__", "m"), (rr.MATCH_EQ, "job", "pdu")]
    assert selector_matchers('m{a="\\u00e9"}') is None  # left to the server over JSON
    assert selector_matchers("sum(m)") is None
    assert FleetQuery('m{a="\\u00e9"}', "instance", "power").transport == "auto"
    with pytest.raises(ValueError, match="remote read takes a plain selector"):
        FleetQuery("sum(m)", "instance", "power", transport="remote-read")


class _Gateway:
    """A loopback HTTP gateway in front of the real server, as deployments put one: it
    forwards every request, but answers remote read as ``mode`` says (refuse it, or pass on
    a damaged stream)."""

    def __init__(self, upstream: str, mode: str) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers["Content-Length"])))

            def _forward(self, data: bytes | None) -> None:
                read = self.path.startswith("/api/v1/read")
                if read and gateway.mode == "hold":  # a slow answer: the reader waits on it
                    gateway.held.release()
                    gateway.release.wait(30)
                if read and gateway.mode == "refuse":
                    self.send_error(404, "remote read is not exposed here")
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(upstream + self.path, data=data,
                                                 headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=30) as reply:
                        status, kind, body = reply.status, reply.headers["Content-Type"], \
                            reply.read()
                except urllib.error.HTTPError as exc:
                    status, kind, body = exc.code, exc.headers["Content-Type"], exc.read()
                if read:
                    body = gateway.damage(body)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.mode = mode
        self.held = threading.Semaphore(0)  # one count per remote read being held
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def damage(self, body: bytes) -> bytes:
        if self.mode == "truncate":
            return body[: len(body) * 2 // 3]
        if self.mode == "histogram":  # every chunk claims another encoding
            return body.replace(b"\x18\x01\x22", b"\x18\x02\x22")
        return body

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_auto_falls_back_to_json_where_remote_read_is_refused(fleet) -> None:
    gateway = _Gateway(fleet[0].url, "refuse")
    try:
        client = PrometheusClient(gateway.url)
        auto = read_fleet(client, FleetQuery("node_power_watts", "instance", "power"), START,
                          END, _names(), measured_as="simulated")
        assert auto.transport == "json"
        direct = read_fleet(PrometheusClient(fleet[0].url),
                            FleetQuery("node_power_watts", "instance", "power"), START, END,
                            _names(), measured_as="simulated")
        assert direct.transport == "remote-read"
        assert auto.total_energy_j == direct.total_energy_j
        with pytest.raises(PrometheusError, match="does not serve remote read.*HTTP 404"):
            read_fleet(client, FleetQuery("node_power_watts", "instance", "power",
                                          transport="remote-read"), START, END,
                       measured_as="simulated")
    finally:
        gateway.close()


@pytest.mark.parametrize("mode,message", [("truncate", "truncated|damaged"),
                                          ("histogram", "not whole XOR chunks")])
def test_a_damaged_stream_is_a_clear_error(fleet, mode, message) -> None:
    gateway = _Gateway(fleet[0].url, mode)
    try:
        with pytest.raises(PrometheusError, match=f"remote read from .*({message}).*--transport "
                                                  "json"):
            read_fleet(PrometheusClient(gateway.url),
                       FleetQuery("node_power_watts", "instance", "power"), START, END,
                       _names(), measured_as="simulated")
    finally:
        gateway.close()


def test_ctrl_c_while_workers_read_is_one_line_and_leaves_no_process(fleet, tmp_path) -> None:
    # Ctrl-C goes to the whole process group, the forked remote-read workers included: only
    # the parent may speak (one line, exit 130), and the workers must be gone with it.
    gateway = _Gateway(fleet[0].url, "hold")
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "tinypower.cli", "fleet", "--runs-dir", str(tmp_path),
             "--prometheus", gateway.url, "--query", "node_power_watts", "--kind", "power",
             "--measured-as", "simulated", "--window", str(START), str(END)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert gateway.held.acquire(timeout=30), "no remote read reached the gateway"
            os.killpg(child.pid, signal.SIGINT)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    finally:
        gateway.close()
    assert child.returncode == 130 and err == "interrupted (Ctrl-C)\n", err
    deadline = time.monotonic() + 5
    while True:  # the workers end with their parent: the process group empties
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a remote-read worker outlived tinypower"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def real_body(fleet) -> bytes:
    return _body(fleet[0].url, "node_power_watts")


def test_every_cut_of_a_real_stream_is_refused_or_a_whole_prefix(real_body) -> None:
    whole = rr.decode_stream(real_body, 0, 2**62)
    for cut in sorted({1, 5, 100, *range(7, len(real_body), len(real_body) // 97)}):
        try:
            part = rr.decode_stream(real_body[:cut], 0, 2**62)
        except rr.RemoteReadError as exc:
            assert "damaged" in str(exc) or "truncated" in str(exc)
            continue
        # A cut exactly between frames is a shorter valid answer: whole series only.
        assert part.labels == whole.labels[:len(part.labels)]


def test_a_flipped_bit_that_shifts_the_bit_stream_is_caught(real_body) -> None:
    stream = rr.split_stream(real_body)
    first_byte = int(stream.starts[3]) + 2  # the first time's varint: its continuation bit
    damaged = bytearray(real_body)
    damaged[first_byte] ^= 0x80
    with pytest.raises(rr.RemoteReadError, match="do not decode to their stated length"):
        rr.decode_stream(bytes(damaged), 0, 2**62)
    # A flip that keeps every field's length changes a number and passes: the frames'
    # CRC32C, which would catch it, is not checked (see the module doc).
    damaged = bytearray(real_body)
    damaged[first_byte] ^= 0x01
    changed = rr.decode_stream(bytes(damaged), 0, 2**62)
    assert not np.array_equal(changed.time_ms, rr.decode_stream(real_body, 0, 2**62).time_ms)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uvarints_round_trip(value: int) -> None:
    data = rr.encode_uvarint(value) + b"\x01"
    assert rr.read_uvarint(data, 0) == (value, len(data) - 1)


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=20))
def test_vectorized_varints_read_what_the_scalar_reader_reads(values: list[int]) -> None:
    data = b"".join(rr.encode_uvarint(v) for v in values)
    starts, pos = [], 0
    for _ in values:
        starts.append(pos)
        pos = rr.read_uvarint(data, pos)[1]
    got, sizes = rr._varints(np.frombuffer(data + bytes(16), dtype=np.uint8),
                             np.array(starts, dtype=np.int64))
    assert got.tolist() == values
    assert sizes.tolist() == [len(rr.encode_uvarint(v)) for v in values]


def _unsnappy_literals(block: bytes) -> bytes:
    """A snappy block of literals back to its bytes (format_description.txt, section 2.1)."""
    size, pos = rr.read_uvarint(block, 0)
    out = bytearray()
    while pos < len(block):
        tag = block[pos]
        assert tag & 3 == 0, "only literals are written"
        n, pos = tag >> 2, pos + 1
        if n >= 60:
            extra = n - 59
            n, pos = int.from_bytes(block[pos:pos + extra], "little"), pos + extra
        out += block[pos:pos + n + 1]
        pos += n + 1
    assert len(out) == size
    return bytes(out)


@given(st.binary(max_size=70_000))
def test_snappy_literal_blocks_round_trip(data: bytes) -> None:
    assert _unsnappy_literals(rr.snappy_literal_block(data)) == data


def test_fleet_command_says_which_api_it_used(fleet, tmp_path, capsys) -> None:
    for transport in ("remote-read", "json"):
        code = main(["fleet", "--runs-dir", str(tmp_path / transport), "--prometheus",
                     fleet[0].url, "--query", "node_energy_joules_total", "--kind", "energy",
                     "--nodes", ",".join(_names()), "--measured-as", "simulated",
                     "--transport", transport, "--window", str(START), str(END), "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 1 and out["transport"] == transport  # the gap makes it invalid
