"""Fleet telemetry from Prometheus: the energy of many nodes over a window, per node and total.

Why this way: past one machine, power telemetry already lives in Prometheus (PDUs over SNMP,
BMCs over IPMI/Redfish, GPUs over DCGM). We read it over the HTTP API rather than collect it
again, integrate each node's readings in the timing core (:mod:`energy_monitor.series`) and
state what the readings could support: coverage, the sampling interval actually seen, gaps,
counter resets, and the nodes that sent nothing.

Two ways to fetch, both returning raw ``matrix`` results:

- ``raw`` (plain selectors such as ``node_power_watts{job="pdu"}``): an instant query of a range
  selector, ``sel[60s]``, returns the readings exactly as scraped, with their own timestamps.
  This is what the rules need: ``query_range`` evaluates at fixed steps and fills a missing
  reading with the last one for up to the server's lookback delta (5 minutes by default), so
  gaps shorter than that and the real sampling interval would be invisible.
- ``range`` (any PromQL expression, e.g. a sum over a node's GPUs): ``/api/v1/query_range`` at
  ``step_s``; its readings are the step-aligned evaluations, so gaps show only where the series
  went stale. The result says which way was used.

Raw readings travel over one of two APIs (``FleetQuery.transport``; the result records which):

- ``remote-read`` (:mod:`energy_monitor.remote_read`): ``POST /api/v1/read`` with streamed XOR
  chunks. The server sends its TSDB chunks untouched, about 2 bytes a reading against about 25
  as JSON text it must format and we must parse; decoding them in numpy is several times
  faster end to end, with the very same readings (times are ms either way; values are the same
  doubles).
- ``json``: the query API above. Expressions always use it; ``auto`` (the default) uses it when
  the server, or a gateway before it, refuses remote read, or when a selector's strings hold
  escapes this reader does not interpret (the server's own PromQL parser then reads them).

Fetching is chunked in time so no series returns more than 11,000 points per request (the
server's ``query_range`` limit, kept for raw reads too so responses stay bounded) and no request
more than ``points_per_request``; nodes are batched with a label matcher when the query is a
plain selector, so memory is bounded by a few batches, not the fleet. Over JSON the next
request is fetched while the current one is parsed; over remote read, two worker processes each
fetch, decode and integrate a batch and return only its series' energies (decoding is many
small numpy steps whose Python overhead holds the GIL, so threads would barely share the
cores). Clean power series are integrated together (:mod:`energy_monitor.series_batch`), equal
to the bit to one by one. Reading times are UTC epoch seconds.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.pool
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energy_monitor import remote_read
from energy_monitor.meter import MEASURED_AS, MeterError, MeterIdentity
from energy_monitor.series import CounterSeries, Gap, PowerSeries, SeriesEnergy
from energy_monitor.series_batch import power_energies, power_energies_flat

KINDS = ("power", "energy")  # a W gauge, or a J counter (resets handled by CounterSeries)
FETCH_MODES = ("auto", "raw", "range")
TRANSPORTS = ("auto", "remote-read", "json")
MAX_POINTS_PER_SERIES = 11_000  # Prometheus refuses query_range answers longer than this
POINTS_PER_REQUEST = 2_000_000  # about 50 MB of JSON per answer
NODES_PER_QUERY = 2_000
REMOTE_NODES_PER_QUERY = 500  # smaller answers, so two decode at once even for 1,000 nodes
WORKERS = 2  # processes that read and integrate remote-read batches at once
# Remote read answers about 2 bytes per reading (JSON about 25) and decodes into 16 bytes; a
# request of this many points keeps the decoder's working set near 300 MB.
REMOTE_POINTS_PER_REQUEST = 8_000_000

# metric{matchers} with nothing around it: a selector we may add a node matcher to.
_PLAIN_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{(.*)\})?\s*$", re.S)


Series = PowerSeries | CounterSeries


class PrometheusError(MeterError):
    """Prometheus could not be reached or refused the query; the message says how to fix it."""


@dataclass(frozen=True)
class SeriesPart:
    """One series of a node (a node may have several: PSUs, GPUs) and its energy."""

    source: str  # the series' labels, for reports
    energy: SeriesEnergy


@dataclass
class NodeEnergy:
    """A node's energy over the window: the sum over its series, with their evidence."""

    node: str
    parts: list[SeriesPart]

    @property
    def energy_j(self) -> float:
        return sum(p.energy.energy_j for p in self.parts)

    @property
    def coverage(self) -> float:
        return min(p.energy.coverage for p in self.parts)

    @property
    def readings(self) -> int:
        """Readings inside the window of the node's sparsest series."""
        return min(p.energy.readings for p in self.parts)

    @property
    def median_interval_s(self) -> float:
        return max(p.energy.median_interval_s for p in self.parts)

    @property
    def max_interval_s(self) -> float:
        return max(p.energy.max_interval_s for p in self.parts)

    @property
    def resets(self) -> int:
        return sum(p.energy.resets for p in self.parts)

    @property
    def gaps(self) -> list[tuple[str, Gap]]:
        return [(p.source, g) for p in self.parts for g in p.energy.gaps]


@dataclass
class FleetEnergy:
    """Energy of a set of nodes over ``[start_s, end_s]``, and why it may not be valid."""

    start_s: float
    end_s: float
    max_gap_s: float
    kind: str
    measured_as: str
    source: str  # where the readings came from: the query and server, or a folder
    nodes: dict[str, NodeEnergy] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # asked for, but no readings at all
    fetch: str = ""  # "raw", "range" or "" (not from Prometheus)
    transport: str = ""  # "remote-read", "json" or "" (not from Prometheus)
    expected_nodes: int | None = None  # --expect-nodes: fewer nodes with readings is invalid

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def total_energy_j(self) -> float:
        return sum(n.energy_j for n in self.nodes.values())

    @property
    def gaps(self) -> list[tuple[str, str, Gap]]:
        return [(name, src, g) for name, n in self.nodes.items() for src, g in n.gaps]

    @property
    def problems(self) -> list[str]:
        """What makes the result invalid: every missing node and every gap, by name."""
        out = [f"node {name}: no readings at all in the window" for name in self.missing]
        if not self.nodes and not self.missing:
            out.append(f"no series matched in the window ({self.source}): check the query, "
                       "the node label and the window; 0 J is not a measurement")
        if self.expected_nodes is not None and len(self.nodes) < self.expected_nodes:
            out.append(f"{len(self.nodes)} node(s) have readings, {self.expected_nodes} "
                       "expected (--expect-nodes)")
        out += [
            f"node {name}: gap of {g.duration_s:.1f} s ({g.start_s:.3f} .. {g.end_s:.3f}) "
            f"longer than the allowed {self.max_gap_s:g} s in {src}"
            for name, src, g in self.gaps
        ]
        return out

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "start_s": self.start_s, "end_s": self.end_s, "duration_s": self.duration_s,
            "kind": self.kind, "measured_as": self.measured_as, "source": self.source,
            "fetch": self.fetch, "transport": self.transport, "max_gap_s": self.max_gap_s,
            "total_energy_j": self.total_energy_j, "valid": self.valid,
            "problems": self.problems, "missing": list(self.missing),
            "nodes": {
                name: {
                    "energy_j": n.energy_j, "coverage": n.coverage, "readings": n.readings,
                    "median_interval_s": _json_float(n.median_interval_s),
                    "max_interval_s": _json_float(n.max_interval_s), "resets": n.resets,
                    "series": len(n.parts),
                }
                for name, n in self.nodes.items()
            },
        }


def _json_float(x: float) -> float | None:
    return None if np.isnan(x) else x


def integrate_nodes(
    series_by_node: dict[str, list[tuple[str, Series]]],
    start_s: float,
    end_s: float,
    *,
    max_gap_s: float,
    kind: str,
    measured_as: str,
    source: str,
    nodes: Sequence[str] | None = None,
    fetch: str = "",
) -> FleetEnergy:
    """Integrate each node's series over the window; ``nodes`` (when given) are the nodes
    that must be there: any without a series is listed as missing."""
    if measured_as not in MEASURED_AS:
        raise ValueError(f"measured_as must be one of {MEASURED_AS}, got {measured_as!r}")
    result = FleetEnergy(start_s, end_s, max_gap_s, kind, measured_as, source, fetch=fetch)
    names = list(nodes if nodes is not None else sorted(series_by_node))
    flat = [s for name in names for _, s in series_by_node.get(name) or []]
    powers = iter(power_energies([s for s in flat if isinstance(s, PowerSeries)],
                                 start_s, end_s, max_gap_s))
    parts = {
        name: [SeriesPart(src, next(powers) if isinstance(s, PowerSeries)
                          else s.energy(start_s, end_s, max_gap_s))
               for src, s in series_by_node[name]]
        for name in names if series_by_node.get(name)
    }
    _assemble(result, parts, names)
    return result


def _assemble(result: FleetEnergy, parts: dict[str, list[SeriesPart]],
              names: Sequence[str]) -> None:
    """Add the nodes ``names`` to ``result`` in that order; those without parts are missing."""
    for name in names:
        if parts.get(name):
            result.nodes[name] = NodeEnergy(name, parts[name])
        else:
            result.missing.append(name)


# --- the HTTP API ------------------------------------------------------------------------------


class PrometheusClient:
    """The two endpoints we use, over stdlib urllib (POST, so long node matchers fit)."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PrometheusError(
                f"{url!r} is not a Prometheus URL: give its base address, e.g. "
                "http://prometheus.example:9090"
            )
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _post(self, path: str, params: dict[str, str]) -> bytes:
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            self.url + path, data=data,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                detail = json.loads(body).get("error", body.decode(errors="replace"))
            except ValueError:
                detail = body.decode(errors="replace")[:300]
            raise PrometheusError(
                f"Prometheus at {self.url} refused {params.get('query', '')!r}: {detail} "
                f"(HTTP {exc.code}); check the PromQL and the window"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: {reason}; check the URL (scheme, "
                "host, port) and that the server is up (GET {url}/-/ready)".replace(
                    "{url}", self.url)
            ) from None

    def range_selector(self, selector: str, end_s: float, range_s: float) -> bytes:
        """Raw readings in ``(end_s - range_s, end_s]`` (an instant query of ``sel[range]``)."""
        return self._post("/api/v1/query", {
            "query": f"{selector}[{int(round(range_s * 1000))}ms]", "time": f"{end_s:.3f}",
        })

    def query_range(self, query: str, start_s: float, end_s: float, step_s: float) -> bytes:
        return self._post("/api/v1/query_range", {
            "query": query, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}",
            "step": f"{step_s:g}",
        })

    def remote_read(self, start_ms: int, end_ms: int,
                    matchers: list[tuple[int, str, str]]) -> remote_read.SeriesSamples:
        """Raw samples over the remote-read API; :class:`remote_read.RemoteReadRefused` when
        the server does not serve it (the caller may use the JSON API instead)."""
        try:
            return remote_read.read_samples(self.url, start_ms, end_ms, matchers,
                                            self.timeout_s)
        except remote_read.RemoteReadError as exc:
            raise PrometheusError(f"{exc}; retry, or read over the JSON API "
                                  "(--transport json)") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: {reason}; check the URL (scheme, "
                f"host, port) and that the server is up (GET {self.url}/-/ready)"
            ) from None

    def build_info(self) -> dict:
        request = urllib.request.Request(self.url + "/api/v1/status/buildinfo")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read()).get("data", {})
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
            raise PrometheusError(f"cannot read {self.url}/api/v1/status/buildinfo: {exc}; "
                                  "is this a Prometheus server?") from None


_VALUES_KEY = b'"values":['


def _json_answer(
    client: PrometheusClient, selector: str, mode: str, chunk: tuple[float, float],
    step_s: float,
) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """One time chunk ``(lo, hi)`` of ``selector`` over the JSON API, as :func:`parse_matrix`
    gives it: raw readings (a range selector evaluated at ``hi``) or, in ``range`` mode, the
    query evaluated every ``step_s``."""
    lo, hi = chunk
    if mode == "raw":
        return parse_matrix(client.range_selector(selector, hi, hi - lo))
    return parse_matrix(client.query_range(selector, lo, hi, step_s))


def parse_matrix(body: bytes) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """``(labels, time_s, value)`` per series of a ``matrix`` answer.

    Millions of ``[t,"v"]`` pairs decoded by :func:`json.loads` cost more than the server
    takes to send them, so only the small label objects go through json; each series' numbers
    are cut out of the bytes and converted in one pass. Inside a JSON answer ``"values":[``
    can only be the key of a series' readings (quotes inside strings are escaped) and the
    readings hold only numbers, so the first ``]]`` after it ends them.
    """
    if not body.startswith(b'{"status":"success"'):
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"not a Prometheus API answer: {body[:200]!r}") from None
        raise PrometheusError(f"Prometheus answered {answer.get('status')} "
                              f"({answer.get('errorType', '?')}): {answer.get('error', answer)}")
    head = body[:200]
    if b'"resultType":"matrix"' not in head:
        raise PrometheusError(
            f"expected a range (matrix) answer, got {head!r}: the query must return a vector "
            "of series (e.g. a metric selector), not a scalar or string"
        )
    pos = 0
    while True:
        at = body.find(_VALUES_KEY, pos)
        if at < 0:
            return
        metric_at = body.rfind(b'{"metric":', pos, at)
        labels = json.loads(body[metric_at + len(b'{"metric":'):at - 1])
        end = body.find(b"]]", at)
        numbers = body[at + len(_VALUES_KEY):end].translate(None, b'[]"')
        try:  # numpy's C text parser: 4-5x faster than float() per number
            pairs = np.fromstring(numbers, dtype=np.float64, sep=",")
        except ValueError:
            pairs = np.zeros(1)  # odd length: refused below
        if len(pairs) % 2 or len(pairs) != numbers.count(b",") + 1:
            raise PrometheusError(
                f"unreadable readings for series {labels}: expected [time, \"value\"] pairs "
                "of numbers; is this a Prometheus server?"
            )
        yield labels, pairs[0::2], pairs[1::2]
        pos = end


def is_plain_selector(query: str) -> bool:
    """Whether ``query`` is ``metric{matchers}`` (so raw readings and node matchers apply)."""
    m = _PLAIN_SELECTOR.match(query)
    return bool(m and (m.group(1) or m.group(2)) and "[" not in query)


def with_node_matcher(selector: str, label: str, nodes: Sequence[str]) -> str:
    """``selector`` restricted to ``label`` in ``nodes`` (a regex alternation, escaped)."""
    m = _PLAIN_SELECTOR.match(selector)
    if not m or not is_plain_selector(selector):
        raise ValueError(f"not a plain selector: {selector!r}")
    alternatives = "|".join(re.escape(n) for n in nodes)
    quoted = alternatives.replace("\\", "\\\\").replace('"', '\\"')
    matchers = [x for x in [(m.group(3) or "").strip().rstrip(","), f'{label}=~"{quoted}"'] if x]
    return f"{m.group(1) or ''}{{{', '.join(matchers)}}}"


_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"""
    r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(?:,|$)""", re.S)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_MATCH_OPS = {"=": remote_read.MATCH_EQ, "!=": remote_read.MATCH_NEQ,
              "=~": remote_read.MATCH_RE, "!~": remote_read.MATCH_NRE}


def selector_matchers(selector: str) -> list[tuple[int, str, str]] | None:
    """A plain selector's label matchers as remote read takes them (``(type, name, value)``),
    or None when its strings use escapes this reader does not interpret (then the JSON API,
    which lets the server parse the PromQL, is used)."""
    m = _PLAIN_SELECTOR.match(selector)
    if not m or not is_plain_selector(selector):
        return None
    out = [(remote_read.MATCH_EQ, "__name__", m.group(1))] if m.group(1) else []
    body = (m.group(3) or "").strip()
    at = 0
    while at < len(body):
        part = _MATCHER.match(body, at)
        if not part:
            return None
        name, op, quoted = part.groups()
        text = quoted[1:-1]
        if quoted[0] != "`":
            escapes = re.findall(r"\\(.)", text, re.S)
            if any(e not in _ESCAPES for e in escapes):
                return None
            text = re.sub(r"\\(.)", lambda e: _ESCAPES[e.group(1)], text, flags=re.S)
        out.append((_MATCH_OPS[op], name, text))
        at = part.end()
    return out


@dataclass(frozen=True)
class FleetQuery:
    """What to read: a PromQL query per node, which label names the node, and its units."""

    query: str
    node_label: str
    kind: str  # "power" (W gauge) or "energy" (J counter)
    step_s: float = 1.0  # expected sampling interval (raw) or evaluation step (range)
    fetch: str = "auto"
    wrap_j: float | None = None  # a counter's range if it wraps rather than resets
    # How raw readings travel: "remote-read" (the TSDB's chunks, fast), "json" (the HTTP
    # query API) or "auto" (remote read where the server allows it and the query is a plain
    # selector; JSON otherwise). Expressions (fetch "range") always use JSON.
    transport: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} (W gauge or J counter), "
                             f"got {self.kind!r}")
        if self.fetch not in FETCH_MODES:
            raise ValueError(f"fetch must be one of {FETCH_MODES}, got {self.fetch!r}")
        if not self.step_s > 0:
            raise ValueError(f"step_s must be positive, got {self.step_s!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.transport == "remote-read" and (
                self.mode != "raw" or selector_matchers(self.query) is None):
            raise ValueError(
                f"remote read takes a plain selector with plainly quoted matchers like "
                f"metric{{job=\"pdu\"}}, not {self.query!r}; use transport 'json' or 'auto'"
            )
        if self.fetch == "raw" and not is_plain_selector(self.query):
            raise ValueError(
                f"raw readings need a plain selector like metric{{job=\"pdu\"}}, not "
                f"{self.query!r}; use fetch='range' for an expression"
            )

    @property
    def mode(self) -> str:
        if self.fetch != "auto":
            return self.fetch
        return "raw" if is_plain_selector(self.query) else "range"


def time_chunks(start_s: float, end_s: float, step_s: float, series: int,
                points_per_request: int = POINTS_PER_REQUEST) -> list[tuple[float, float]]:
    """Consecutive ``(from, to)`` pieces of the span, each at most 11,000 points per series
    and ``points_per_request`` points over ``series`` series."""
    points = min(MAX_POINTS_PER_SERIES, max(2, points_per_request // max(series, 1)))
    length_s = (points - 1) * step_s
    edges = list(np.arange(start_s, end_s, length_s)) + [end_s]
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _series_name(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _build_series(kind: str, source: str, time_s: np.ndarray, value: np.ndarray,
                  wrap_j: float | None, checked: bool = False) -> Series:
    if kind == "power":
        return PowerSeries(time_s, value, source=source, checked=checked)
    return CounterSeries(time_s, value, source=source, wrap_j=wrap_j, checked=checked)


def read_fleet(
    client: PrometheusClient,
    what: FleetQuery,
    start_s: float,
    end_s: float,
    nodes: Sequence[str] | None = None,
    *,
    max_gap_s: float | None = None,
    measured_as: str,
    points_per_request: int | None = None,
    nodes_per_query: int | None = None,
) -> FleetEnergy:
    """Energy per node and in total over ``[start_s, end_s]``.

    ``nodes`` are the ``node_label`` values that must be present (missing ones make the result
    invalid); without it, every node the query returns is used. ``max_gap_s`` (default 1.5
    sampling intervals) is the longest stretch between readings that is still integrated.
    Readings a little before and after the window are fetched so the ends can be interpolated.
    Raw readings come over remote read when ``what.transport`` allows it (``auto`` falls back
    to the JSON API when the server refuses remote read); the result says which was used.
    ``points_per_request`` bounds each answer (default: :data:`POINTS_PER_REQUEST` over JSON,
    :data:`REMOTE_POINTS_PER_REQUEST` over remote read), ``nodes_per_query`` the nodes asked
    for at once (:data:`NODES_PER_QUERY`, :data:`REMOTE_NODES_PER_QUERY`).
    """
    if end_s <= start_s:
        raise ValueError(f"the window must end after it starts ({start_s} .. {end_s})")
    if nodes is not None and not nodes and what.mode == "raw":
        raise ValueError("no nodes given: name at least one node, or none to take all")
    max_gap_s = max_gap_s if max_gap_s is not None else 1.5 * what.step_s
    matchers = selector_matchers(what.query) if what.mode == "raw" else None
    if what.transport != "json" and matchers is not None:
        try:
            return _read_fleet(client, what, start_s, end_s, nodes, max_gap_s, measured_as,
                               points_per_request or REMOTE_POINTS_PER_REQUEST,
                               nodes_per_query or REMOTE_NODES_PER_QUERY, matchers)
        except remote_read.RemoteReadRefused as exc:
            if what.transport == "remote-read":
                raise PrometheusError(
                    f"Prometheus at {client.url} does not serve remote read ({exc}); read "
                    "over the JSON API instead (--transport json or auto)") from None
    return _read_fleet(client, what, start_s, end_s, nodes, max_gap_s, measured_as,
                       points_per_request or POINTS_PER_REQUEST,
                       nodes_per_query or NODES_PER_QUERY, None)


def _read_fleet(
    client: PrometheusClient, what: FleetQuery, start_s: float, end_s: float,
    nodes: Sequence[str] | None, max_gap_s: float, measured_as: str,
    points_per_request: int, nodes_per_query: int,
    matchers: list[tuple[int, str, str]] | None,
) -> FleetEnergy:
    """:func:`read_fleet` over remote read (``matchers`` given) or the JSON API."""
    mode = what.mode
    margin_s = max_gap_s + what.step_s
    batches: list[list[str] | None] = [None]
    if nodes is not None and mode == "raw":
        batches = [list(nodes[i:i + nodes_per_query])
                   for i in range(0, len(nodes), nodes_per_query)]
    expected_series = len(batches[0]) if batches[0] is not None else (len(nodes or []) or 1000)
    source = f"{what.query} at {client.url}"
    result = FleetEnergy(start_s, end_s, max_gap_s, what.kind, measured_as, source, fetch=mode,
                         transport="json" if matchers is None else "remote-read")
    wanted = set(nodes) if nodes is not None else None
    chunks = time_chunks(start_s - margin_s, end_s + margin_s, what.step_s, expected_series,
                         points_per_request)
    if matchers is not None and len(chunks) == 1:
        _remote_batches(result, client, what, batches, chunks[0], matchers, wanted)
        return result
    fetches = [(batch, chunk) for batch in batches for chunk in chunks]

    def fetch(k: int) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        batch, (lo, hi) = fetches[k]
        if matchers is not None:
            samples = client.remote_read(round(lo * 1000), round(hi * 1000),
                                         _with_nodes(matchers, what.node_label, batch))
            return _samples_series(samples)
        selector = (with_node_matcher(what.query, what.node_label, batch)
                    if batch is not None else what.query)
        return _json_answer(client, selector, mode, (lo, hi), what.step_s)

    # The next answers are fetched by a second thread while this one is parsed and integrated.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, 0)
        for b, batch in enumerate(batches):
            parts = []
            for k in range(b * len(chunks), (b + 1) * len(chunks)):
                parts.append(pending.result())
                if k + 1 < len(fetches):
                    pending = pool.submit(fetch, k + 1)
            collected = _collect(parts, what.node_label, wanted)
            by_node: dict[str, list[tuple[str, Series]]] = {}
            for (node, name), (times, values) in collected.items():
                by_node.setdefault(node, []).append(
                    (name, _build_series(what.kind, name, times, values, what.wrap_j,
                                         checked=matchers is not None)))
            part = integrate_nodes(by_node, start_s, end_s, max_gap_s=max_gap_s,
                                   kind=what.kind, measured_as=measured_as, source=source,
                                   nodes=batch)
            result.nodes.update(part.nodes)
            result.missing += part.missing
    if nodes is not None and mode == "range":
        result.missing = [n for n in nodes if n not in result.nodes]
        result.nodes = {n: result.nodes[n] for n in nodes if n in result.nodes}
    return result


def _remote_batches(
    result: FleetEnergy, client: PrometheusClient, what: FleetQuery,
    batches: list[list[str] | None], span_s: tuple[float, float],
    matchers: list[tuple[int, str, str]], wanted: set[str] | None,
) -> None:
    """Read and integrate each batch of nodes over remote read in :data:`WORKERS` worker
    processes (threads where processes cannot be forked), adding them to ``result``.

    Why processes: decoding is thousands of small numpy steps whose Python overhead holds the
    GIL, so threads barely share the cores; each worker returns only its series' energies."""
    lo_ms, hi_ms = round(span_s[0] * 1000), round(span_s[1] * 1000)
    pool: multiprocessing.pool.Pool
    if "fork" in multiprocessing.get_all_start_methods():
        pool = multiprocessing.get_context("fork").Pool(WORKERS, initializer=_quiet_worker)
    else:
        pool = multiprocessing.pool.ThreadPool(WORKERS)
    with pool:  # leaving it terminates the workers, also on an error or Ctrl-C
        pending = [pool.apply_async(_batch_energies, (
            client, what, lo_ms, hi_ms,
            _with_nodes(matchers, what.node_label, batch),
            set(batch) if batch is not None else wanted, result.start_s, result.end_s,
            result.max_gap_s,
        )) for batch in batches]
        for batch, answer in zip(batches, pending, strict=True):
            parts: dict[str, list[SeriesPart]] = {}
            for node, name, energy in answer.get():
                parts.setdefault(node, []).append(SeriesPart(name, energy))
            _assemble(result, parts, batch if batch is not None else sorted(parts))


def _quiet_worker() -> None:
    """A forked worker leaves Ctrl-C to its parent, which stops the pool, and dies quietly
    when stopped. Without this, Ctrl-C (sent to the whole process group) made each worker
    print its own traceback, and the session's SIGTERM handler ran in the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _batch_energies(
    client: PrometheusClient, what: FleetQuery, lo_ms: int, hi_ms: int,
    matchers: list[tuple[int, str, str]], wanted: set[str] | None, start_s: float,
    end_s: float, max_gap_s: float,
) -> list[tuple[str, str, SeriesEnergy]]:
    """One remote-read answer's series energies, ``(node, series, energy)`` in stream order:
    clean power series integrated together where they lie in the decoded arrays, the others
    (and counters) one by one, which reports their gaps and resets."""
    samples = client.remote_read(lo_ms, hi_ms, matchers)
    time_s = samples.time_s
    keys: list[tuple[str, str]] = []
    los: list[int] = []
    his: list[int] = []
    for labels, lo, hi in zip(samples.labels, samples.lo.tolist(), samples.hi.tolist(),
                              strict=True):
        node = _node_of(labels, what.node_label)
        if hi > lo and (wanted is None or node in wanted):
            keys.append((node, _series_name(labels)))
            los.append(lo)
            his.append(hi)
    energies: list[SeriesEnergy | None] = [None] * len(keys)
    if what.kind == "power":
        energies = power_energies_flat(time_s, samples.value, np.array(los, dtype=np.int64),
                                       np.array(his, dtype=np.int64), start_s, end_s,
                                       max_gap_s)
    out = []
    for (node, name), energy, lo, hi in zip(keys, energies, los, his, strict=True):
        if energy is None:
            series = _build_series(what.kind, name, time_s[lo:hi], samples.value[lo:hi],
                                   what.wrap_j, checked=True)
            energy = series.energy(start_s, end_s, max_gap_s)
        out.append((node, name, energy))
    return out


def _with_nodes(matchers: list[tuple[int, str, str]], node_label: str,
                nodes: Sequence[str] | None) -> list[tuple[int, str, str]]:
    """Remote-read ``matchers`` narrowed to ``nodes`` (all nodes when None): the remote-read
    twin of :func:`with_node_matcher`. Prometheus anchors label regexes, so the alternation
    matches exactly these names."""
    if nodes is None:
        return matchers
    return [*matchers, (remote_read.MATCH_RE, node_label, "|".join(re.escape(n) for n in nodes))]


def _node_of(labels: dict[str, str], node_label: str) -> str:
    node = labels.get(node_label)
    if node is None:
        raise PrometheusError(
            f"series {_series_name(labels)} has no label {node_label!r}: name the label that "
            "identifies a node (e.g. instance, node, hostname)"
        )
    return node


def _samples_series(
    samples: remote_read.SeriesSamples,
) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """Remote-read samples as the JSON parser gives them: labels, time (s), value."""
    time_s = samples.time_s
    for labels, lo, hi in zip(samples.labels, samples.lo.tolist(), samples.hi.tolist(),
                              strict=True):
        yield labels, time_s[lo:hi], samples.value[lo:hi]


def _collect(
    answers: Sequence[Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]],
    node_label: str, wanted: set[str] | None,
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Each series' readings over consecutive time chunks' answers, in time order without
    repeats (chunk ends are inclusive) and without NaN readings."""
    pieces: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    last_time: dict[tuple[str, str], float] = {}
    for answer in answers:
        for labels, times, values in answer:
            node = _node_of(labels, node_label)
            if wanted is not None and node not in wanted:
                continue
            key = (node, _series_name(labels))
            keep = times > last_time.get(key, -np.inf)
            keep &= np.isfinite(values)  # a NaN reading is no reading
            if np.all(keep):
                if len(times):
                    pieces.setdefault(key, []).append((times, values))
                    last_time[key] = float(times[-1])
            elif np.any(keep):
                pieces.setdefault(key, []).append((times[keep], values[keep]))
                last_time[key] = float(times[keep][-1])
    return {
        key: parts[0] if len(parts) == 1 else
        (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        for key, parts in pieces.items()
    }


# --- a SeriesMeter for one node ----------------------------------------------------------------


class PrometheusMeter:
    """One node's readings from Prometheus as a :class:`~energy_monitor.meter.SeriesMeter`.

    ``start`` notes the time, ``stop`` reads everything since then. The readings stay in
    Prometheus; with a folder, ``stop`` also writes them there (``readings.csv``) so a session
    keeps its evidence. Several series for the node (PSUs, GPUs) must be summed by the query.
    """

    def __init__(self, url: str, what: FleetQuery, node: str, measured_as: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = PrometheusClient(url)
        self.what = what
        self.node = node
        self.measured_as = measured_as
        self._clock = clock
        self._started_s: float | None = None
        self._folder: Path | None = None

    def identify(self) -> MeterIdentity:
        info = self.client.build_info()
        return MeterIdentity("prometheus", f"{self.what.query} {self.what.node_label}="
                             f"{self.node}", self.client.url, str(info.get("version", "?")),
                             self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        self._started_s = self._clock()
        self._folder = folder

    def stop(self) -> Series:
        if self._started_s is None:
            raise PrometheusError("stop() before start(): start the meter first")
        end_s = self._clock()
        selector = self.what.query
        if self.what.mode == "raw":
            selector = with_node_matcher(selector, self.what.node_label, [self.node])
        chunks = time_chunks(self._started_s, end_s, self.what.step_s, 1)
        answers = [_json_answer(self.client, selector, self.what.mode, chunk, self.what.step_s)
                   for chunk in chunks]
        got = _collect(answers, self.what.node_label, {self.node})
        if len(got) != 1:
            raise PrometheusError(
                f"{self.what.query} gave {len(got)} series for {self.what.node_label}="
                f"{self.node} since start; a meter reads exactly one (sum the node's series "
                "in the query)"
            )
        (_, name), (times, values) = next(iter(got.items()))
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
            column = "power_w" if self.what.kind == "power" else "energy_j"
            np.savetxt(self._folder / "readings.csv", np.column_stack([times, values]),
                       delimiter=",", header=f"time_s,{column}", comments="", fmt="%.6f")
        return _build_series(self.what.kind, name, times, values, self.what.wrap_j)

    def close(self) -> None:
        self._started_s = None

