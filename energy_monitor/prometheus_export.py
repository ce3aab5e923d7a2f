"""Publish a bench's live measurement on a Prometheus ``/metrics`` endpoint.

Why: lab dashboards already scrape Prometheus; a bench running ``tinypower`` should show up
there like any PDU, with the same names our fleet reader understands (a W gauge and a J
counter). The numbers come from the meter and the timing core; this module only publishes
them, labelled with the bench, the meter and how they were measured (a simulated bench says
``simulated``).

Metrics (labels ``bench``, ``meter``, ``measured_as``):

- ``tinypower_power_watts``: the latest mean power (gauge);
- ``tinypower_energy_joules_total``: energy measured since the exporter started (counter);
- ``tinypower_samples_total``: samples received (counter);
- ``tinypower_last_sample_timestamp_seconds``: meter-clock time of the latest sample.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from energy_monitor.meter import MeterIdentity
from energy_monitor.trace import Trace

LABELS = ("bench", "meter", "measured_as")


class MeasurementExporter:
    """Serves one bench's measurement on ``http://address:port/metrics`` (port 0: any free
    port, see :attr:`port`). Loopback by default: exposing it further is the user's choice."""

    def __init__(self, bench: str, meter: MeterIdentity, port: int = 0,
                 address: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        names = dict(bench=bench, meter=f"{meter.kind} {meter.model} {meter.serial}".strip(),
                     measured_as=meter.measured_as)
        self._power = Gauge("tinypower_power_watts", "Latest mean power of the bench (W)",
                            LABELS, registry=self.registry).labels(**names)
        self._energy = Counter("tinypower_energy_joules", "Energy measured by the bench (J)",
                               LABELS, registry=self.registry).labels(**names)
        self._samples = Counter("tinypower_samples", "Samples received from the meter",
                                LABELS, registry=self.registry).labels(**names)
        self._last = Gauge("tinypower_last_sample_timestamp_seconds",
                           "Meter-clock time of the latest sample (s)", LABELS,
                           registry=self.registry).labels(**names)
        self._server, self._thread = start_http_server(port, address, registry=self.registry)
        self.port = self._server.server_port
        self.url = f"http://{address}:{self.port}/metrics"
        self._published = 0  # samples of the current trace already published

    def publish(self, *, energy_j: float, power_w: float, samples: int, time_s: float) -> None:
        """Add ``energy_j`` measured over ``samples`` new samples; ``power_w`` is their mean."""
        if energy_j < 0 or samples < 0 or not math.isfinite(energy_j):
            raise ValueError(f"energy and sample counts only grow: got {energy_j} J, "
                             f"{samples} samples")
        self._energy.inc(energy_j)
        self._samples.inc(samples)
        self._power.set(power_w)
        self._last.set(time_s)

    def publish_trace(self, trace: Trace) -> None:
        """Publish the samples of a growing trace that were not published yet (call it as
        often as the dashboard should update; a new trace after ``restart`` starts over)."""
        new = len(trace) - self._published
        if new <= 0:
            return
        energy = trace.energy_per_sample_j(self._published, len(trace))
        self.publish(energy_j=float(energy.sum()), power_w=float(energy.mean() *
                     trace.sample_rate_hz), samples=new, time_s=trace.time_of(len(trace)))
        self._published = len(trace)

    def restart(self) -> None:
        """The next :meth:`publish_trace` gets a new trace (a new measurement started)."""
        self._published = 0

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
