"""An edge or datacenter SUT described by a TOML file (like ``boards/*.toml``).

The file names the workload, the meters and their addresses, the ranging policy, the limits and
where the director is; ``suts/`` has one commented example per meter kind, and
``docs/scaling.md`` documents every key. The director reads ``[[meters]]``, ``[ranging]`` and
``[limits]``; the client reads ``[workload]``; ``[director]`` tells both where to meet.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy_monitor.series_meters import SERIES_METERS
from tinypower.scale.sync import MAX_SKEW_S
from tinypower.scale.workload import (
    RUNTIMES,
    SCENARIOS,
    CommandWorkload,
    LoadGenSpec,
    Workload,
    WorkloadError,
)
from tinypower.schema import (
    BOOLEAN,
    Rule,
    Schema,
    choice,
    either,
    integer,
    list_of,
    number,
    problems,
    safe_name,
    text,
)

RANGING_MODES = ("auto", "max", "fixed")
ENGINES = ("tinypower", "power-dev")
DEFAULT_PORT = 4950  # the MLPerf power server's port
TOKEN_ENV = "TINYPOWER_TOKEN"
SETTLE_S = 10.0  # MLPerf's ANALYZER_SLEEP_SECONDS before Go and before Stop
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SECRET_KEYS = ("pass", "token", "secret", "community", "key")


class SutError(ValueError):
    """The SUT file is missing or wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class MeterConfig:
    """One meter the director reads: a driver kind, its address and driver options."""

    kind: str
    address: str | None = None
    name: str = ""  # label in results and folders; defaults to the kind
    options: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """For session JSON: options with passwords and SNMP communities masked."""
        options = {k: ("***" if any(s in k.lower() for s in _SECRET_KEYS) else v)
                   for k, v in self.options.items()}
        return {"kind": self.kind, "address": self.address, "name": self.name,
                "options": options}


@dataclass(frozen=True)
class RangingPolicy:
    """How the testing run's analyzer ranges are chosen (MLPerf §4 of the power reference).

    ``auto``: a ranging run with auto ranges, then the testing run at the ranging maxima
    (current x ``current_margin``). ``max``: the ranging run at a fixed ``max_amps`` range (the
    analyzer's largest), then as ``auto``. ``fixed``: no ranging run; the testing run at
    ``max_volts``/``max_amps`` (experimental in MLPerf: not valid for submission).
    """

    mode: str = "auto"
    max_volts: float | None = None
    max_amps: float | None = None
    current_margin: float = 1.1
    settle_s: float = SETTLE_S


@dataclass(frozen=True)
class Limits:
    """What makes a run valid here. MLPerf compliance is judged against MLPerf's own fixed
    constants (``tinypower.scale.director.compliance_checks``), never against these."""

    max_skew_s: float = MAX_SKEW_S
    max_gap_s: float = 2.0  # readings further apart than this are a gap in the window


RETIRED_LIMITS = {
    "min_duration_s": "MLPerf's 600 s is fixed; shorten a run with [workload] min_duration_s "
                      "(it is then not compliant)",
    "max_uncertainty": "MLPerf's 1% per-sample limit is fixed",
}


@dataclass(frozen=True)
class Sut:
    name: str
    workload: Workload
    meters: list[MeterConfig]
    ranging: RangingPolicy = field(default_factory=RangingPolicy)
    limits: Limits = field(default_factory=Limits)
    listen: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT)  # where a local director binds
    connect: tuple[str, int] | None = None  # a remote director the client reaches
    token_env: str = TOKEN_ENV
    output: Path | None = None  # session folders; None: <--runs-dir>/power
    path: Path | None = None
    engine: str = "tinypower"  # or "power-dev": MLCommons power-dev's server and client run it
    power_dev: Any = None  # tinypower.scale.powerdev.PowerDevConfig with engine "power-dev"


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not host:
        raise SutError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    return host, int(port)


def load_sut(path: Path) -> Sut:
    """Read and check a SUT file; relative paths in it are relative to the file."""
    if not path.is_file():
        raise SutError(f"SUT file {path} not found: give a TOML path (see suts/ for examples) "
                       "or 'local'")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SutError(f"{path} is not valid TOML: {exc}") from None
    return sut_from_dict(data, path)


def sut_from_dict(data: dict[str, Any], path: Path | None = None) -> Sut:
    where = str(path) if path else "SUT"
    base = path.parent if path else Path.cwd()
    unknown = set(data) - {"name", "description", "workload", "meters", "ranging", "limits",
                           "director", "engine", "power_dev"}
    if unknown:
        raise SutError(f"{where}: unknown section(s) {sorted(unknown)}; see docs/scaling.md")
    validate_sut(data, where)
    engine = str(data.get("engine", "tinypower"))
    power_dev = None
    if engine == "power-dev":
        from tinypower.scale.powerdev import PowerDevError, config_from_dict

        try:
            power_dev = config_from_dict(data.get("power_dev", {}), base)
        except (PowerDevError, TypeError) as exc:
            raise SutError(f"{where}: {exc}") from None
    elif "power_dev" in data:
        raise SutError(f"{where}: [power_dev] needs engine = \"power-dev\"")
    try:
        workload = _workload(data.get("workload", {}), base, where)
        meters = _meters(data.get("meters", []), where) if engine == "tinypower" \
            or data.get("meters") else []
        ranging = RangingPolicy(**data.get("ranging", {}))
        limits_data = dict(data.get("limits", {}))
        for key, why in RETIRED_LIMITS.items():
            if key in limits_data:
                raise SutError(f"{where} [limits] {key}: compliance is not configurable: "
                               f"{why}; remove the key")
        if "max_skew_ms" in limits_data:
            limits_data["max_skew_s"] = limits_data.pop("max_skew_ms") / 1000.0
        limits = Limits(**limits_data)
    except TypeError as exc:  # an unknown key in a section
        raise SutError(f"{where}: {exc}; see docs/scaling.md for the keys") from None
    except WorkloadError as exc:
        raise SutError(f"{where} [workload]: {exc}") from None
    _check_ranging(ranging, where)
    director = data.get("director", {})
    extra = set(director) - {"listen", "connect", "token_env", "output"}
    if extra:
        raise SutError(f"{where} [director]: unknown key(s) {sorted(extra)}")
    output = Path(director["output"]) if "output" in director else None
    return Sut(
        name=str(data.get("name") or (path.stem if path else "sut")),
        workload=workload, meters=meters, ranging=ranging, limits=limits,
        listen=parse_host_port(director.get("listen", f"127.0.0.1:{DEFAULT_PORT}")),
        connect=parse_host_port(director["connect"]) if director.get("connect") else None,
        token_env=director.get("token_env", TOKEN_ENV),
        output=output if output is None or output.is_absolute() else base / output,
        path=path, engine=engine, power_dev=power_dev,
    )


_HOST_PORT = Rule("HOST:PORT as a string, e.g. \"127.0.0.1:4950\"",
                  lambda v: isinstance(v, str) and bool(v.strip()))
SUT_SCHEMA: Schema = {
    "name": (False, safe_name()),
    "description": (False, text(nonempty=False)),
    "workload": (False, Rule("a table [workload]", lambda v: isinstance(v, dict))),
    "meters": (False, Rule("[[meters]] tables (kind, address, options)",
                           lambda v: isinstance(v, list) and all(isinstance(m, dict) for m in v))),
    "ranging": (False, {"mode": (False, choice(RANGING_MODES)),
                        "max_volts": (False, number(above=0, unit="V")),
                        "max_amps": (False, number(above=0, unit="A")),
                        "current_margin": (False, number(least=1, most=10)),
                        "settle_s": (False, number(least=0, most=3600, unit="s"))}),
    "limits": (False, {"max_skew_s": (False, number(least=0, unit="s")),
                       "max_skew_ms": (False, number(least=0, unit="ms")),
                       "max_uncertainty": (False, number(above=0, most=1)),
                       "max_gap_s": (False, number(above=0, unit="s")),
                       "min_duration_s": (False, number(above=0, unit="s"))}),
    "engine": (False, choice(ENGINES)),
    "power_dev": (False, Rule("a table [power_dev]", lambda v: isinstance(v, dict))),
    "director": (False, {"listen": (False, _HOST_PORT), "connect": (False, _HOST_PORT),
                         "token_env": (False, text()), "output": (False, text())}),
}
LOADGEN_SCHEMA: Schema = {
    "model": (True, text()),
    "scenario": (False, choice(SCENARIOS)),
    "min_duration_s": (False, number(above=0, unit="s")),
    "min_query_count": (False, integer(1)),
    "target_qps": (False, number(above=0)),
    "server_latency_ms": (False, number(above=0, unit="ms")),
    "samples": (False, integer(1)),
    "runtime": (False, choice(RUNTIMES)),
}
COMMAND_SCHEMA: Schema = {"command": (True, list_of(text())), "log_dir": (False, text())}
# The class behind each series-meter kind: its keyword arguments are the [[meters]] options.
_METER_CLASSES = {"ptd": "ptd.Ptd", "yokogawa": "yokogawa.Yokogawa",
                  "redfish": "redfish.Redfish", "snmp_pdu": "snmp_pdu.SnmpPdu",
                  "ipmi": "ipmi.Ipmi", "nvml": "nvml.Nvml", "rapl": "rapl.Rapl"}
_NOT_OPTIONS = ("clock", "on_command", "nvml")  # set by code, not by a user
_ANNOTATION_RULES = {"float": number(), "int": integer(), "bool": BOOLEAN, "str": text(False),
                     "Sequence[str]": list_of(text())}


def meter_options_schema(kind: str) -> Schema:
    """The options a ``[[meters]]`` entry of ``kind`` may set: its driver's keyword
    arguments, with their types where the annotation says a plain one."""
    module, _, cls = _METER_CLASSES[kind].partition(".")
    init = getattr(importlib.import_module(f"energy_monitor.{module}"), cls).__init__
    schema: dict[str, tuple[bool, Rule]] = {
        "kind": (True, choice(sorted(SERIES_METERS))), "name": (False, safe_name()),
        "address": (False, either(text(), integer(0))),
    }
    if kind == "ptd":  # read by the director itself (director.DIRECTOR_OPTIONS), not the driver
        schema["console_log"] = (False, text())
        schema["channel"] = (False, text())
        schema["ptd_command"] = (False, list_of(text()))
    for param in inspect.signature(init).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.name in _NOT_OPTIONS:
            continue
        parts = [t.strip() for t in str(param.annotation).split("|") if t.strip() != "None"]
        rules = [_ANNOTATION_RULES[t] for t in parts if t in _ANNOTATION_RULES]
        rule = (either(*rules) if len(rules) == len(parts) and rules
                else Rule("a value", lambda v: True))
        schema[param.name] = (param.default is inspect.Parameter.empty, rule)
    return schema


def validate_sut(data: dict[str, Any], where: str) -> None:
    """Every key, type and range of a SUT file, checked before anything runs; raises
    :class:`SutError` listing each problem with its key, what was expected and what found."""
    found = problems(data, SUT_SCHEMA, where)
    workload = data.get("workload")
    if isinstance(workload, dict):
        if "command" in workload:  # other keys: _workload says a command takes only these
            found += problems({k: v for k, v in workload.items() if k in COMMAND_SCHEMA},
                              COMMAND_SCHEMA, where, "workload")
        else:
            found += problems(workload, LOADGEN_SCHEMA, where, "workload")
    meters = data.get("meters")
    for i, meter in enumerate(meters if isinstance(meters, list) else []):
        if not isinstance(meter, dict):
            continue
        kind = meter.get("kind")
        if not isinstance(kind, str) or kind not in SERIES_METERS:
            found.append(f"{where}: [[meters]] #{i + 1}: no driver for meter kind {kind!r}; "
                         f"kinds: {', '.join(sorted(SERIES_METERS))}")
            continue
        found += problems(meter, meter_options_schema(kind), where, f"meters #{i + 1}")
    if found:
        raise SutError("; ".join(found) + "; see docs/scaling.md for every key")


def _workload(w: dict[str, Any], base: Path, where: str) -> Workload:
    w = dict(w)
    if "command" in w:
        command = w.pop("command")
        log_dir = w.pop("log_dir", None)
        if w:
            raise SutError(f"{where} [workload]: a command workload takes only command and "
                           f"log_dir, not {sorted(w)}")
        if not isinstance(command, list) or not command:
            raise SutError(f"{where} [workload] command must be a list of arguments")
        return CommandWorkload([str(a) for a in command],
                               (base / log_dir) if log_dir else None)
    if "model" not in w:
        raise SutError(f"{where} [workload]: give model (a .tflite path or a suite name such "
                       "as kws01 or ic01) or command (a program that writes a LoadGen log)")
    w["model"] = resolve_workload_model(str(w["model"]), base)
    return LoadGenSpec(**w)


def resolve_workload_model(text: str, base: Path) -> Path:
    """A ``.tflite`` path, or a suite name (kws01, ic01, ...) for its MLPerf Tiny reference
    model from the cache that ``tinypower models fetch`` fills."""
    from tinypower.models import ModelResolutionError, resolve_model
    from tinypower.suites.benchmarks import SUITES, get_suite

    if text in SUITES:
        try:
            model = resolve_model(get_suite(text), "reference")
        except ModelResolutionError:  # its advice (--model) is the CLI's, not a SUT file's
            raise SutError(f"[workload] model = {text!r} is the MLPerf Tiny reference model, "
                           "which is not cached: run `tinypower models fetch` (needs internet), "
                           "or set [workload] model to a .tflite path") from None
        assert model.path is not None
        return model.path
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise SutError(f"model {path} not found: give a .tflite path or a suite name "
                       f"({', '.join(sorted(SUITES))})")
    return path


def _meters(items: list[dict[str, Any]], where: str) -> list[MeterConfig]:
    if not items:
        raise SutError(f"{where}: no [[meters]]; add at least one (kind, address)")
    meters: list[MeterConfig] = []
    for item in items:
        item = dict(item)
        kind = item.pop("kind", None)
        if not kind:
            raise SutError(f"{where}: a [[meters]] entry has no kind")
        if kind not in SERIES_METERS:
            raise SutError(f"{where}: no driver for meter kind {kind!r}; kinds: "
                           f"{', '.join(sorted(SERIES_METERS))}")
        name = str(item.pop("name", "") or kind)
        taken = {m.name for m in meters}
        n = 2
        base_name = name
        while name in taken:
            name, n = f"{base_name}-{n}", n + 1
        if not _NAME.match(name):
            raise SutError(f"{where}: meter name {name!r} must be letters, digits, - and _")
        address = item.pop("address", None)
        meters.append(MeterConfig(str(kind), str(address) if address else None, name, item))
    return meters


def _check_ranging(r: RangingPolicy, where: str) -> None:
    if r.mode not in RANGING_MODES:
        raise SutError(f"{where} [ranging] mode must be one of {RANGING_MODES}, not {r.mode!r}")
    if r.mode == "max" and not r.max_amps:
        raise SutError(f"{where} [ranging] mode 'max' needs max_amps (the analyzer's largest "
                       "current range)")
    if r.mode == "fixed" and not (r.max_amps and r.max_volts):
        raise SutError(f"{where} [ranging] mode 'fixed' needs max_volts and max_amps")
    if r.settle_s < 0 or r.current_margin < 1:
        raise SutError(f"{where} [ranging]: settle_s must be >= 0 and current_margin >= 1")
