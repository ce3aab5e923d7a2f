"""SUT files (the examples in suts/ and bad input), the skew arithmetic, and
`tinypower measure --sut local --quick` end to end (the PTDaemon-simulator path: CI has no RAPL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from energy_monitor.series_meters import SERIES_METERS
from tinypower.scale.commands import quick
from tinypower.scale.sut import SutError, load_sut
from tinypower.scale.sync import SkewError, SkewSample, check_skew
from tinypower.scale.workload import CommandWorkload, LoadGenSpec

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models" / "mlperf-tiny"


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """The reference models where `tinypower models fetch` would put them."""
    if not MODELS.is_dir():
        pytest.skip(f"MLPerf Tiny models not at {MODELS}")
    (tmp_path / "cache" / "models").mkdir(parents=True)
    for name in ("kws_ref_model.tflite", "pretrainedResnet_quant.tflite"):
        shutil.copy(MODELS / name, tmp_path / "cache" / "models" / name)
    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "cache"))


def test_every_meter_kind_has_a_commented_example(model_cache):
    kinds = {}
    for path in sorted((ROOT / "suts").glob("*.toml")):
        assert path.read_text().lstrip().startswith("#"), f"{path} needs a comment header"
        data = tomllib.loads(path.read_text())
        if data.get("engine") == "power-dev":  # power-dev's server owns PTDaemon: no meters
            sut = load_sut(path)
            assert sut.meters == [] and sut.power_dev.ptd == "simulator"
            assert sut.power_dev.listen.startswith("127.0.0.1:")
            continue
        kinds[data["meters"][0]["kind"]] = path
    assert set(kinds) == {"ptd", "yokogawa", "snmp_pdu", "redfish", "ipmi", "nvml", "rapl"}
    assert set(kinds) == set(SERIES_METERS)  # every registered driver has its example
    for kind, path in kinds.items():
        assert load_sut(path).meters[0].kind == kind
    ptd = load_sut(ROOT / "suts" / "ptd.toml")
    assert isinstance(ptd.workload, LoadGenSpec) and ptd.workload.scenario == "Offline"
    assert ptd.workload.model.name == "pretrainedResnet_quant.tflite"
    assert ptd.connect == ("192.168.1.10", 4950) and ptd.limits.max_skew_s == 0.4
    assert ptd.meters[0].options == {"timeout_s": 5.0, "poll_interval_s": 1.0}
    bmc = load_sut(ROOT / "suts" / "redfish.toml")
    assert bmc.meters[0].public()["options"]["password"] == "***"
    pdu = load_sut(ROOT / "suts" / "snmp_pdu.toml").meters[0]
    assert (pdu.address, pdu.options["vendor"], pdu.options["outlet"]) == ("10.0.0.9",
                                                                          "raritan", 7)
    assert pdu.public()["options"]["community"] == "***"
    ipmi = load_sut(ROOT / "suts" / "ipmi.toml").meters[0]
    assert ipmi.address == "10.0.0.6" and ipmi.options["reading"] == "instantaneous"
    assert ipmi.public()["options"]["password"] == "***"
    gpu = load_sut(ROOT / "suts" / "nvml.toml")
    assert isinstance(gpu.workload, CommandWorkload) and "{log_dir}" in gpu.workload.argv
    short = quick(ptd)
    assert short.workload.min_duration_s == 3.0 and short.ranging.settle_s == 0.5


@pytest.mark.parametrize("text, message", [
    ("[workload]\nmodel = 'x.tflite'\n[[meters]]\nkind = 'ptd'\n", "x.tflite not found"),
    ("[workload]\ncommand = ['true']\n", "no [[meters]]"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='ptd'\n[ranging]\nmode='max'\n",
     "needs max_amps"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='ptd'\n[limits]\nmax_skw_ms=1\n",
     "[limits] max_skw_ms: unknown key"),
    ("[workload]\ncommand = ['true']\nscenario='Offline'\n[[meters]]\nkind='ptd'\n",
     "a command workload takes only command and log_dir"),
    ("[wrkload]\n", "unknown section"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='wattmeter'\n",
     "no driver for meter kind 'wattmeter'"),
    ("[workload\n", "not valid TOML"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='ptd'\n[limits]\nmin_duration_s=2\n",
     "[limits] min_duration_s: compliance is not configurable"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='ptd'\n[limits]\nmax_uncertainty=0.5\n",
     "[limits] max_uncertainty: compliance is not configurable"),
    ("[workload]\ncommand = ['true']\n[[meters]]\nkind='ptd'\n[power_dev]\nptd='simulator'\n",
     '[power_dev] needs engine = "power-dev"'),
    ("engine = 'power-dev'\n[workload]\ncommand = ['true']\n[power_dev]\n"
     "listen = '0.0.0.0:4950'\n", "plain TCP without authentication: set allow_remote"),
    ("engine = 'power-dev'\n[workload]\ncommand = ['true']\n[power_dev]\nptdd = 'x'\n",
     "[power_dev]: unknown key"),
    ("engine = 'power'\n[workload]\ncommand = ['true']\n",
     "engine: expected one of tinypower, power-dev"),
])
def test_bad_sut_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "sut.toml"
    path.write_text(text)
    with pytest.raises(SutError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_sut(path)


def test_skew_arithmetic_and_limit():
    # The director's clock is 0.25 s ahead; 10 ms each way, 2 ms in the director.
    sample = SkewSample(t0_s=100.0, t1_s=100.26, t2_s=100.262, t3_s=100.022 - 0.25 + 0.25)
    assert sample.offset_s == pytest.approx(0.25)
    assert sample.delay_s == pytest.approx(0.02)
    assert sample.bound_s == pytest.approx(0.26)
    check_skew(sample, 0.4, "before new")
    with pytest.raises(SkewError, match=r"up to 260.0 ms .* above the 200 ms limit"):
        check_skew(sample, 0.2, "before new")


@pytest.mark.skipif(not (MODELS / "kws_ref_model.tflite").is_file(),
                    reason="MLPerf Tiny models not found")
def test_measure_sut_local_quick(tmp_path, model_cache):
    done = subprocess.run(
        [sys.executable, "-m", "tinypower.cli", "measure", "--sut", "local", "--quick",
         "--runs-dir", str(tmp_path / "runs"), "--json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"),
    )
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    failed = [c for c in record["checks"] if not c["ok"] and c["kind"] == "validity"]
    if done.returncode == 1:
        # The simulated analyzer follows the whole machine's CPU load: on a shared machine a
        # change of load between ranging and testing trips the rules' -5% check, rightly.
        assert [c["name"] for c in failed] == ["ranging_power"], failed
        print(f"the machine's load changed between ranging and testing: {failed[0]['message']}")
    else:
        assert record["valid"] and not failed
    assert not record["compliant"]
    run_length = next(c for c in record["checks"] if c["name"] == "run_length")
    assert run_length["kind"] == "compliance" and not run_length["ok"]  # 600 s, never the SUT's
    assert any("not rule-compliant" in n for n in record["notes"])
    # One store for every session kind: the edge session is indexed in <runs-dir>/results.sqlite
    from tinypower.results.db import query

    stored = query(tmp_path / "runs" / "results.sqlite")
    assert stored and {r.source for r in stored} == {str(Path(record["folder"]).resolve())}
    assert not (tmp_path / "runs" / "power" / "results.sqlite").exists()
    testing = record["testing"]
    assert testing["unit"] == "mJ/query" and testing["value"] > 0
    if Path("/sys/class/powercap").is_dir() and record["measured_as"] == "counter":
        return  # RAPL was readable: the counter path
    assert record["measured_as"] == "simulated"
    assert any("SIMULATED" in n for n in record["notes"])
    # The simulated analyzer follows CPU utilisation: busy (LoadGen) is above its 15 W idle.
    assert 15.0 < testing["average_power_w"] <= 65.0
    folder = Path(record["folder"])
    assert (folder / "run_1" / "spl.txt").is_file() and (folder / "results.json").is_file()


def test_measure_sut_errors_are_one_clear_message(tmp_path, capsys, monkeypatch):
    from tinypower.cli import main

    def err() -> str:  # rich wraps long lines
        return " ".join(capsys.readouterr().err.split())

    assert main(["measure", "--sut", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml not found" in err()
    remote = tmp_path / "remote.toml"
    remote.write_text("[workload]\ncommand = ['true']\n[[meters]]\nkind = 'ptd'\n"
                      "[director]\nconnect = '127.0.0.1:9'\ntoken_env = 'TP_TEST_TOKEN'\n")
    monkeypatch.delenv("TP_TEST_TOKEN", raising=False)
    assert main(["measure", "--sut", str(remote)]) == 2
    assert "set TP_TEST_TOKEN" in err()
    monkeypatch.setenv("TP_TEST_TOKEN", "x")
    assert main(["measure", "--sut", str(remote)]) == 2
    assert "cannot reach the director at 127.0.0.1:9" in err()
