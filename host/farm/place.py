"""Measure through a labgrid place: acquire it from the coordinator, turn its resources into
the port URLs the bench path already opens, release it whatever happens.

A place is labgrid's unit of exclusive use: while tinypower holds it, nobody else drives the
board. Its resources are found by name (the exporter's resource name, or the name a
``add-named-match`` gives it):

========== ======================================= =========================================
name       labgrid resource                        tinypower port
========== ======================================= =========================================
dut        NetworkSerialPort (ser2net, RFC 2217)   ``--port`` (the board's UART)
monitor    NetworkSerialPort                       ``--monitor-port`` (LPM01A, PPK2)
interface  NetworkSerialPort                       ``--interface-port`` (the IO manager)
========== ======================================= =========================================

pyserial opens ``rfc2217://host:port`` (or ``socket://host:port`` for a raw ser2net port)
exactly as it opens ``/dev/ttyACM0``, so the drivers do not know they are remote. Other
resources of the place are recorded, not used.

The place is released when the run ends, fails or is interrupted. For the paths Python cannot
clean up after (SIGKILL, a lost terminal), a small guard process in its own session waits on a
pipe from the run: if the pipe closes before the run said it released the place, the guard
releases it, if the run's user still holds it.

labgrid is imported only here, and only when a run asks for a place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from tinypower.dut.hardware_bench import BenchPorts
from tinypower.runner import RunError

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's default port, on this host
ROLES = ("dut", "monitor", "interface")  # resource names that become tinypower ports
RESOURCES_TIMEOUT_S = 10.0  # the exporters start ser2net when the place is acquired
RPC_TIMEOUT_S = 30.0  # a coordinator that takes longer to answer one request is down
RELEASED = b"released\n"  # what the run tells its guard once it has released the place


class PlaceError(RunError):
    """The place could not be used; the message names the place and the fix."""


@dataclass
class PlaceResource:
    """One resource of the acquired place, as the session records it."""

    name: str  # its name in the place (the role, for dut/monitor/interface)
    cls: str
    exporter: str
    group: str
    resource: str  # its name on the exporter
    url: str | None = None  # what pyserial opens, for a serial port
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Place:
    """An acquired place: where its coordinator is, who holds it, and its resources."""

    coordinator: str
    name: str
    acquired_by: str
    resources: dict[str, PlaceResource]

    def ports(self) -> BenchPorts:
        def url(role: str) -> str | None:
            r = self.resources.get(role)
            return r.url if r else None

        return BenchPorts(dut=url("dut"), monitor=url("monitor"), interface=url("interface"))

    def record(self) -> dict[str, Any]:
        """The session's ``farm`` entry: coordinator, place, holder, and per resource its
        exporter, group and address."""
        return {
            "coordinator": self.coordinator,
            "place": self.name,
            "acquired_by": self.acquired_by,
            "resources": {name: asdict(r) for name, r in self.resources.items()},
        }


def coordinator_address(given: str | None) -> str:
    """``--coordinator``, else labgrid's own ``LG_COORDINATOR``, else this host's default."""
    return given or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def _labgrid() -> Any:
    try:
        from labgrid.remote import client
    except ImportError as exc:
        raise PlaceError(
            f"--place needs labgrid ({exc}): pip install 'tinypower[labgrid]'"
        ) from exc
    return client


class _QuietLabgrid(logging.Filter):
    """labgrid's client logs its errors on the root logger; tinypower reports them itself,
    as one message, so they would be said twice (and raw) on the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}labgrid{os.sep}" not in record.pathname


class _Client:
    """A labgrid client session on its own event loop, driven one call at a time."""

    def __init__(self, coordinator: str) -> None:
        client = _labgrid()
        self._quiet = _QuietLabgrid()
        logging.getLogger().addFilter(self._quiet)
        from labgrid.remote.generated import labgrid_coordinator_pb2
        from labgrid.util.proxy import proxymanager

        self.pb2 = labgrid_coordinator_pb2
        self.coordinator = coordinator
        self.loop = asyncio.new_event_loop()
        address = proxymanager.get_grpc_address(coordinator, default_port=20408)
        # The client's own checks read these options (labgrid-client's defaults).
        options = argparse.Namespace(allow_unmatched=False, kick=False, place=None)

        async def connect() -> Any:
            session = client.ClientSession(address, asyncio.get_running_loop(), args=options)
            await session.start()
            return session

        try:
            self.session = self.loop.run_until_complete(
                asyncio.wait_for(connect(), RPC_TIMEOUT_S))
        except (client.Error, TimeoutError):
            self.loop.close()
            logging.getLogger().removeFilter(self._quiet)
            raise PlaceError(
                f"no labgrid coordinator answers at {coordinator}: start one "
                "(`labgrid-coordinator --listen HOST:PORT`) or pass --coordinator HOST:PORT"
            ) from None

    @property
    def holder(self) -> str:
        """Who this client acquires as: labgrid's ``host/user``."""
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def call(self, coro: Any) -> Any:
        """Run one request to the coordinator; one that does not answer is an error."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coro, RPC_TIMEOUT_S))
        except TimeoutError:
            raise PlaceError(
                f"the labgrid coordinator at {self.coordinator} did not answer in "
                f"{RPC_TIMEOUT_S:g} s"
            ) from None

    def sync(self) -> None:
        self.call(self.session.sync_with_coordinator())

    def place(self, name: str) -> Any:
        places = self.session.places
        if name not in places:
            raise PlaceError(
                f"no place {name!r} on the coordinator at {self.coordinator}; places: "
                f"{', '.join(sorted(places)) or 'none'} (`labgrid-client -p {name} create` "
                "and `add-match` make one)"
            )
        return places[name]

    def acquire(self, name: str) -> None:
        import grpc

        place = self.place(name)
        if place.acquired:
            raise _held(place)
        try:
            self.call(self.session.stub.AcquirePlace(
                self.pb2.AcquirePlaceRequest(placename=name)))
        except grpc.aio.AioRpcError as exc:
            self.sync()
            if self.place(name).acquired not in (None, self.holder):
                raise _held(self.place(name)) from None
            raise PlaceError(f"the coordinator refused place {name}: {exc.details()}") from None
        self.sync()

    def release(self, name: str) -> None:
        import grpc

        try:
            self.call(self.session.stub.ReleasePlace(
                self.pb2.ReleasePlaceRequest(placename=name, fromuser=self.holder)))
            self.sync()
        except grpc.aio.AioRpcError as exc:
            raise PlaceError(f"could not release place {name}: {exc.details()}") from None

    def resources(self, name: str) -> dict[str, PlaceResource]:
        """The place's acquired resources once their exporters have published their
        addresses (ser2net starts on acquire)."""
        deadline = time.monotonic() + RESOURCES_TIMEOUT_S
        while True:
            missing, found = self._resources(self.place(name))
            if not missing:
                return found
            if time.monotonic() > deadline:
                raise PlaceError(
                    f"place {name}: {', '.join(missing)} not available after "
                    f"{RESOURCES_TIMEOUT_S:g} s: is its exporter running "
                    "(`labgrid-client resources`)?"
                )
            self.call(asyncio.sleep(0.1))

    def _resources(self, place: Any) -> tuple[list[str], dict[str, PlaceResource]]:
        missing: list[str] = []
        found: dict[str, PlaceResource] = {}
        for path in place.acquired_resources:
            exporter, group, cls, resource = path
            match = place.getmatch(path)
            name = (match.rename if match else None) or resource
            entry = self.session.resources.get(exporter, {}).get(group, {}).get(resource)
            label = f"{name} ({exporter}/{group}/{cls}/{resource})"
            if entry is None or not entry.avail:
                missing.append(label)
                continue
            params = dict(entry.params)
            found[name] = PlaceResource(name, cls, exporter, group, resource, None, params)
            if cls == "NetworkSerialPort":
                if params.get("port") is None:
                    missing.append(label)
                    continue
                found[name].url = _serial_url(name, params)
        return missing, found

    def close(self) -> None:
        try:
            self.call(self.session.stop())
            self.call(self.session.close())
        finally:
            self.loop.close()
            logging.getLogger().removeFilter(self._quiet)


def _held(place: Any) -> PlaceError:
    return PlaceError(
        f"place {place.name} is held by {place.acquired}: wait until they release it "
        f"(`labgrid-client -p {place.name} release`), or choose another place "
        "(`labgrid-client places`)"
    )


def _serial_url(name: str, params: dict[str, Any]) -> str:
    """The pyserial URL of a NetworkSerialPort: RFC 2217 (ser2net's telnet) or a raw socket."""
    extra = params.get("extra") or {}
    if extra.get("proxy_required"):
        raise PlaceError(
            f"resource {name} is on an isolated exporter reached only through SSH via "
            f"{extra.get('proxy')}: forward its port yourself and pass it with --port/"
            "--monitor-port, or run the exporter without --isolated"
        )
    host = str(params["host"])
    host = f"[{host}]" if ":" in host else host
    scheme = {"rfc2217": "rfc2217", "raw": "socket"}.get(params.get("protocol", "rfc2217"))
    if scheme is None:
        raise PlaceError(f"resource {name}: unknown serial protocol {params.get('protocol')!r}")
    # ser2net does not answer RFC 2217 SET_CONTROL as pyserial waits for; labgrid's own serial
    # driver opens its ports with the same option (labgrid/driver/serialdriver.py).
    options = "?ign_set_control" if scheme == "rfc2217" else ""
    return f"{scheme}://{host}:{params['port']}{options}"


@contextmanager
def acquired_place(
    coordinator: str, name: str, note: Callable[[str], None] = lambda _: None
) -> Iterator[Place]:
    """Acquire ``name``, yield its resources, and release it on every way out."""
    client = _Client(coordinator)
    guard: subprocess.Popen | None = None
    try:
        if client.place(name).acquired == client.holder:
            # Acquired beforehand by this user (`labgrid-client acquire`): theirs to release.
            note(f"using place {name}, which you hold (it stays acquired)")
            yield Place(coordinator, name, client.holder, _checked(client, name))
            return
        client.acquire(name)
        try:
            guard = _start_guard(coordinator, name, client.holder)
            resources = _checked(client, name)
            note(f"acquired place {name} from {coordinator}")
            yield Place(coordinator, name, client.holder, resources)
        finally:
            _release(client, name, guard, note)
    finally:
        client.close()


def _checked(client: _Client, name: str) -> dict[str, PlaceResource]:
    """The place's resources, which must include the board's UART."""
    resources = client.resources(name)
    if "dut" not in resources:
        raise PlaceError(
            f"place {name} has no dut resource (it has "
            f"{', '.join(sorted(resources)) or 'none'}): name the board's UART 'dut' "
            f"(`labgrid-client -p {name} add-named-match "
            "EXPORTER/GROUP/NetworkSerialPort/RESOURCE dut`)"
        )
    return resources


def _release(
    client: _Client, name: str, guard: subprocess.Popen | None, note: Callable[[str], None]
) -> None:
    """Release the place and tell the guard; if the coordinator cannot be told, say so and
    leave the guard to try again (raising here would hide how the run ended)."""
    try:
        client.release(name)
    except PlaceError as exc:
        note(f"warning: {exc}; its guard process retries, or run `labgrid-client -p {name} "
             "release`")
        released = False
    else:
        note(f"released place {name}")
        released = True
    if guard is not None:
        with contextlib.suppress(OSError):  # a guard that died early cannot be told
            if released:
                guard.stdin.write(RELEASED)
            guard.stdin.close()


def measure_at_place(args: argparse.Namespace, err: Any, measure: Callable[..., int]) -> int:
    """``tinypower measure --place``: acquire the place, point the run's ports at its
    resources, run ``measure(args, err)`` with the place's record in ``args.farm``, release."""
    if not args.board:
        raise PlaceError("--place needs --board: the board file of the board at that place")
    given = [o for o, v in (("--port", args.port), ("--monitor-port", args.monitor_port),
                            ("--interface-port", args.interface_port)) if v]
    if given:
        raise PlaceError(f"--place takes every port from the place: drop {', '.join(given)}")
    if args.flash:
        raise PlaceError("--flash does not reach a place's debug probe yet: flash the board "
                         "through labgrid, then measure with --place")
    coordinator = coordinator_address(args.coordinator)
    with acquired_place(coordinator, args.place, lambda t: err.print(t, highlight=False)) as place:
        needed = [("monitor", "energy" in args.mode.split(",")), ("interface", args.interface)]
        for role, needs in needed:
            if needs and role not in place.resources:
                raise PlaceError(
                    f"place {args.place} has no {role} resource for this run (it has "
                    f"{', '.join(sorted(place.resources))}): add one named {role} "
                    f"(`labgrid-client -p {args.place} add-named-match "
                    f"EXPORTER/GROUP/NetworkSerialPort/RESOURCE {role}`)"
                )
        ports = place.ports()
        args.port, args.monitor_port = ports.dut, ports.monitor
        args.interface_port = ports.interface
        args.farm = place.record()
        return measure(args, err)


def _start_guard(coordinator: str, name: str, holder: str) -> subprocess.Popen:
    """The process that releases the place if this one dies holding it. Its own session keeps
    it out of a terminal's Ctrl-C and of a kill sent to this run's process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "tinypower.farm.place", "guard", coordinator, name, holder],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _guard(coordinator: str, name: str, holder: str) -> int:
    """Wait for the run's pipe to close; release the place unless the run said it did."""
    said = sys.stdin.buffer.read()
    if said == RELEASED:
        return 0
    client = _Client(coordinator)
    try:
        if client.place(name).acquired == holder:
            client.release(name)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "guard":
        sys.exit(_guard(*sys.argv[2:]))
    sys.exit("usage: python -m tinypower.farm.place guard COORDINATOR PLACE HOLDER")
