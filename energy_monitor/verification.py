"""How far each instrument driver has been verified: a table shipped with the package.

No driver has met a real instrument yet, so a reader of a result must be told which protocol
details its numbers rest on unverified. Levels, weakest first:

- ``simulator-only``: tested only against tinypower's own simulator, whose behaviour comes from
  the vendor's documents (``shared/reference/instruments.md``); what the documents leave open
  is unverified.
- ``conformance-tested``: someone else's client (the vendor's library, the MLCommons runner)
  runs unmodified against our simulator in the tests, so simulator and driver agree with a
  third party's reading of the protocol, not only with each other.
- ``validated``: real captures from the instrument are replayed in the tests.

A level is raised only with the test that is its evidence, named in ``EVIDENCE``.
"""

from __future__ import annotations

LEVEL_NAMES = ("simulator-only", "conformance-tested", "validated")

# driver kind -> (level, evidence: the tests that justify the level, or what is unverified)
LEVELS: dict[str, tuple[str, str]] = {
    "lpm01a": ("simulator-only",
               "tests/test_lpm01a.py against lpm01a_sim; error text, stop order, eventsrc and "
               "energy-mode rate are UNVERIFIED (instruments.md §12)"),
    "ppk2": ("conformance-tested",
             "tests/conformance/test_ppk2_api.py: ppk2-api, as shipped, against ppk2_sim "
             "(docs/conformance.md); VID/PID UNVERIFIED"),
    "otii": ("conformance-tested",
             "tests/conformance/test_otii_client.py: otii-tcp-client, as shipped, against "
             "otii_sim (docs/conformance.md); channel rates and error codes UNVERIFIED"),
    "joulescope": ("simulator-only",
                   "tests/test_joulescope.py against joulescope_sim at the Python API "
                   "(no public byte protocol)"),
    "ptd": ("simulator-only", "tests/test_ptd.py against ptd_sim"),
    "yokogawa": ("simulator-only",
                 "tests/test_yokogawa.py against yokogawa_sim; *IDN? and :RATE list UNVERIFIED"),
    "snmp_pdu": ("simulator-only", "tests/test_snmp_pdu.py against snmp_pdu_sim"),
    "redfish": ("simulator-only", "tests/test_redfish.py against redfish_sim"),
    "ipmi": ("simulator-only", "tests/test_ipmi.py against a fake ipmitool (ipmi_sim)"),
    "nvml": ("simulator-only", "tests/test_nvml.py against a fake pynvml (nvml_sim)"),
    "rapl": ("simulator-only", "tests/test_rapl.py against a sysfs tree (rapl_sim)"),
    "prometheus": ("conformance-tested",
                   "tests/test_prometheus.py against a real Prometheus server"),
}


def level_of(kind: str) -> str:
    """The verification level of a driver kind (``unknown`` for one not in the table)."""
    entry = LEVELS.get(kind)
    return entry[0] if entry else "unknown"


def evidence_of(kind: str) -> str:
    """What the level of ``kind`` rests on."""
    entry = LEVELS.get(kind)
    return entry[1] if entry else "not in energy_monitor/verification.py"
