"""Property tests: every published-log reader, fed anything, returns or raises the tool's own
error (:class:`ResultFileError`), and ``rescore_case`` never raises at all.

Why: ``tinypower rescore`` walks whole results repositories that anyone could have edited. A
mutation campaign found UnicodeDecodeError, KeyError, TypeError, ValueError and RecursionError
tracebacks from non-UTF-8 bytes, JSON of the wrong shape, ``:::MLLOG null`` and 5000-digit
numbers. Inputs here are arbitrary bytes, arbitrary JSON, and real published files with bytes
flipped, cut or spliced with hostile tokens. Real files come from ``shared/mlperf-logs``
(those examples are skipped where it is absent; the arbitrary ones always run).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinypower.results import power_logs, tiny_logs
from tinypower.results.logio import ResultFileError, printable
from tinypower.results.rescore import STATUSES, classify, rescore_case

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
TE01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/energy"
TP01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/performance"
TP13 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U385RG_Q/kws/performance"
TA03 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_L4R5ZI/ic/accuracy"
TP17 = LOGS / "tiny/v1.3/STMicroelectronics/NUCLEO_U575ZI_Q/sww/performance"
POWER = LOGS / "power/v2.1/Dell/XR12_A2x1_TRT_MaxQ/resnet50/Offline"

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE = [b"\xff\xfe", b"\x1b[2J", b"\r", b"\x00", b"null", b"[]", b"{}", b'"x"', b"-1", b"1e999",
           b"NaN", b"9" * 5000, b"[" * 3000, b"\xc3\x28", b",", b"]", b"m-results-[", b"infer "]

# Arbitrary JSON: the shapes a results.json or timestamps file could wrongly have.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["mode", "infer", "power", "samples", "timestamps", "iterations",
                         "start_time", "end_time", "results", "class", "file", "detections",
                         "detection_windows", "dutycycle", "start_times_s", "stop_times_s",
                         "processing_time", "error", "x"]), inner, max_size=6),
    max_leaves=30)


def expect_own_error(call: Callable[[], object]) -> None:
    """The reader returns, or raises ResultFileError; anything else is a bug."""
    try:
        call()
    except ResultFileError as exc:
        assert str(exc)  # one message naming the problem
        assert "\x1b" not in str(exc)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes replaced, cut, or a hostile token spliced in."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "splice"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[at:at + draw(st.integers(1, 4000))]
        else:
            out[at:at] = draw(st.sampled_from(HOSTILE))
    return bytes(out)


def _folder(files: dict[str, bytes], name: str = "energy") -> tuple[tempfile.TemporaryDirectory,
                                                                     Path]:
    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name) / "v1.1" / "sys" / "kws" / name
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return tmp, folder


def _real(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        pytest.skip(f"published logs not found at {folder}")
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


TINY_READERS = [
    tiny_logs.read_eembc_energy, tiny_logs.read_eembc_performance, tiny_logs.read_eembc_accuracy,
    tiny_logs.read_mlcommons_energy, tiny_logs.read_mlcommons_performance,
    tiny_logs.read_mlcommons_accuracy, tiny_logs.read_sww, tiny_logs.score_eembc_summary,
    tiny_logs.score_published, tiny_logs.published_value, tiny_logs.published_top1,
    tiny_logs.published_auc, tiny_logs.published_sww, tiny_logs.printed_energy_windows,
    tiny_logs.printed_performance_windows,
]


def _all_readers(folder: Path) -> None:
    for reader in TINY_READERS:
        expect_own_error(lambda r=reader: r(folder))
    case = rescore_case(folder)
    assert case.status in STATUSES
    json.dumps(case.to_json())


@FAST
@given(name=st.sampled_from(["log.txt", "results.txt", "script.async", "results.json",
                             "trace1-timestamps.json", "trace1-energy.bin"]),
       data=st.binary(max_size=400))
def test_any_bytes_in_any_tiny_file(name: str, data: bytes) -> None:
    tmp, folder = _folder({name: data})
    with tmp:
        _all_readers(folder)


@FAST
@given(name=st.sampled_from(["results.json", "trace1-timestamps.json"]), value=json_values)
def test_any_json_shape(name: str, value: object) -> None:
    files = {name: json.dumps(value).encode()}
    if name == "trace1-timestamps.json":
        files["trace1-energy.bin"] = b"\xf1\x00\x00\x7a\x44" + b"\x00\x00\x80\x3f" * 50
        files["log.txt"] = b'00001.000 parser: Command "io dut infer 10 1"\n'
    tmp, folder = _folder(files)
    with tmp:
        _all_readers(folder)


@FAST
@given(value=json_values, mode=st.sampled_from(["a", "e", "p"]))
def test_results_json_elements_of_any_shape(value: object, mode: str) -> None:
    element = {"mode": mode, "file": "tst_000000_Stop_7.bin", "class": "7", "infer": value,
               "power": value, "dutycycle": value}
    tmp, folder = _folder({"results.json": json.dumps([element, element]).encode()})
    with tmp:
        _all_readers(folder)


@FAST
@given(data=st.data())
def test_mutated_published_tiny_folders(data) -> None:
    source = data.draw(st.sampled_from([TE01, TP01, TP13, TA03, TP17]))
    files = _real(source)
    name = data.draw(st.sampled_from(sorted(files)))
    files[name] = data.draw(mutated(files[name]))
    tmp, folder = _folder(files, source.name)
    with tmp:
        _all_readers(folder)


@FAST
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_accuracy_lines_of_any_text(text: str) -> None:
    log = ('00014.671 parser: Command "bload dut "C:\\d\\emu_s_002009.bin""\n'
           f"00015.849 dut: m-results-[{text}]\r\n").encode("utf-8", "surrogatepass")
    tmp, folder = _folder({"log.txt": log}, "accuracy")
    with tmp:
        expect_own_error(lambda: tiny_logs.read_eembc_accuracy(folder))


# --- MLPerf power folders -----------------------------------------------------------------------


POWER_READERS = [
    lambda f: power_logs.read_spl(f / "run_1" / "spl.txt"),
    lambda f: power_logs.read_mlperf_log(f / "run_1" / "mlperf_log_detail.txt"),
    lambda f: power_logs.score_run_dir(f / "run_1"),
    lambda f: power_logs.score_power_folder(f),
]


def _power_readers(folder: Path) -> None:
    for reader in POWER_READERS:
        expect_own_error(lambda r=reader: r(folder))
    case = rescore_case(folder)
    assert case.status in STATUSES and case.kind == "power"


@FAST
@given(name=st.sampled_from(["run_1/spl.txt", "run_1/mlperf_log_detail.txt",
                             "power/server.json", "power/client.json", "results.json"]),
       data=st.binary(max_size=300))
def test_any_bytes_in_any_power_file(name: str, data: bytes) -> None:
    files = {"ranging/spl.txt": b"", name: data}
    tmp, folder = _folder(files, "Offline")
    with tmp:
        _power_readers(folder)


@FAST
@given(line=st.sampled_from([b":::MLLOG null", b":::MLLOG []", b':::MLLOG {"key": 5}',
                             b':::MLLOG {"key": "power_begin", "value": null}',
                             b':::MLLOG {"key": "result_query_count", "value": ' + b"9" * 5000
                             + b"}", b":::MLLOG " + b"[" * 5000, b":::MLLOG \xff\xfe"]),
       data=st.data())
def test_hostile_mllog_lines(line: bytes, data) -> None:
    files = _real(POWER)
    detail = "run_1/mlperf_log_detail.txt"
    lines = files[detail].split(b"\n")
    at = data.draw(st.integers(0, len(lines)))
    files[detail] = b"\n".join(lines[:at] + [line] + lines[at:])
    tmp, folder = _folder(files, "Offline")
    with tmp:
        _power_readers(folder)


@FAST
@given(data=st.data())
def test_mutated_published_power_folder(data) -> None:
    files = _real(POWER)
    name = data.draw(st.sampled_from(sorted(n for n in files if not n.endswith("ptd_logs.txt"))))
    files[name] = data.draw(mutated(files[name]))
    tmp, folder = _folder(files, "Offline")
    with tmp:
        _power_readers(folder)


# --- limits -------------------------------------------------------------------------------------


def test_file_above_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    folder = tmp_path / "kws" / "energy"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text('00001.0 parser: Command "io dut infer 300 1"\n')
    with (folder / "trace1-energy.bin").open("wb") as f:
        f.truncate(2 * 2**30)  # sparse: 2 GiB on paper, nothing on disk
    (folder / "trace1-timestamps.json").write_text("[0.1, 0.2, 0.3]")
    with pytest.raises(ResultFileError, match="2048 MiB, above the 256 MiB"):
        tiny_logs.read_eembc_trace(folder / "trace1-energy.bin")
    case = rescore_case(folder)
    assert case.status == "flagged" and "above the 256 MiB" in " ".join(case.reasons)


def test_huge_infer_count_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "kws" / "performance"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text(f'00001.0 parser: Command "dut infer {"9" * 5000} 1"\n'
                                    "00002.0 dut: m-lap-us-1\n00003.0 dut: m-lap-us-2\n")
    with pytest.raises(ResultFileError, match="is not a plausible count"):
        tiny_logs.read_eembc_performance(folder)


@pytest.mark.parametrize("name", ["power/server.json", "power/client.json", "results.json"])
def test_non_utf8_power_side_files_do_not_stop_the_score(tmp_path: Path, name: str) -> None:
    if not POWER.is_dir():
        pytest.skip(f"published logs not found at {POWER}")
    folder = Path(shutil.copytree(POWER, tmp_path / "v2.1" / "Offline"))
    (folder / name).write_bytes(b"\xff\xfe{\x00\x9f")
    case = rescore_case(folder)
    assert case.derived == pytest.approx(266.9385801)  # side files only feed the facts


def test_printable_escapes_terminal_control() -> None:
    """Text from a result file goes into one-line messages: newlines and tabs are escaped
    too, and bidi overrides, which could make a line read other than it is."""
    assert printable("a\x1b[31mb\x07\r\n\t\x9b\u202e") == (
        "a\\x1b[31mb\\x07\\r\\n\\t\\x9b\\u202e")


def test_classify_never_raises_on_unreadable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "kws" / "energy"
    folder.mkdir(parents=True)
    (folder / "results.txt").write_bytes(b"\xff" * 10)
    assert classify(folder)[0] == "tiny_unreadable"
    source = tmp_path / "code" / "src" / "performance"  # not under a benchmark: not a result
    source.mkdir(parents=True)
    (source / "results.txt").write_bytes(b"\xff" * 10)
    assert classify(source) == (None, None)


# --- helpers and the streaming-wake-word counts against the MLCommons runner ---------------------


@FAST
@given(value=json_values)
def test_json_number_helpers_accept_or_refuse_cleanly(value: object) -> None:
    from tinypower.results.logio import json_float, json_int
    expect_own_error(lambda: json_float(value, "x"))
    expect_own_error(lambda: json_int(value, "x"))


@FAST
@given(text=st.text(max_size=40))
def test_printable_leaves_no_control_character(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in shown)


ORACLE_RUNNER = LOGS.parent / "oracles" / "mlcommons-tiny" / "benchmark" / "runner"


def _oracle_sww():
    if not (ORACLE_RUNNER / "streaming_ww_utils.py").is_file():
        pytest.skip(f"MLCommons runner not found at {ORACLE_RUNNER}")
    import importlib.util
    import sys
    sys.path.insert(0, str(ORACLE_RUNNER))  # it imports runner_utils beside it
    try:
        spec = importlib.util.spec_from_file_location("streaming_ww_utils",
                                                      ORACLE_RUNNER / "streaming_ww_utils.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ORACLE_RUNNER))
    return module


@FAST
@given(gaps=st.lists(st.integers(1, 4000), min_size=1, max_size=40),
       windows=st.lists(st.tuples(st.floats(0, 60, allow_nan=False),
                                  st.floats(0, 2, allow_nan=False)), max_size=8))
def test_sww_detection_counts_equal_the_runners(gaps: list[int], windows: list) -> None:
    """Ours and the MLCommons runner's ``calc_detection_stats`` (run unmodified) agree."""
    oracle = _oracle_sww()
    detections = [500]
    for gap in gaps:
        detections.append(detections[-1] + gap)
    true_windows = sorted((start, start + length) for start, length in windows)
    tp, fn, fp = oracle.calc_detection_stats(list(detections), [list(w) for w in true_windows])
    assert tiny_logs.detection_stats(detections, true_windows) == (len(tp), len(fn), len(fp))


def test_fifo_in_place_of_a_log_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    from tinypower.results.logio import read_text
    fifo = tmp_path / "server.json"
    os.mkfifo(fifo)
    with pytest.raises(ResultFileError, match="not a regular file"):
        read_text(fifo)


@FAST
@given(data=st.binary(max_size=400))
def test_published_table_of_any_bytes(data: bytes) -> None:
    from tinypower.results.rescore import read_published_table
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "CASES.md"
        table.write_bytes(b"| case | folder | published | unit |\n|---|---|---|---|\n" + data)
        expect_own_error(lambda: read_published_table(table))


@FAST
@given(folder=st.text(alphabet=st.sampled_from(["a", "/", ".", " ", "\x00", "\x1b", "\u00e9"]),
                     max_size=30),
       value=st.sampled_from(["1.0", "nan", "inf", "1e999", "-0", "x", "", "9" * 400]),
       unit=st.text(max_size=6))
def test_published_table_rows_of_any_text(folder: str, value: str, unit: str) -> None:
    from tinypower.results.rescore import read_published_table
    row = "| x | {} | {} | {} |\n".format(*(c.replace("|", "") for c in (folder, value, unit)))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "CASES.md"
        table.write_bytes(("| case | folder | published | unit |\n|---|---|---|---|\n" + row)
                          .encode("utf-8", "surrogatepass"))
        expect_own_error(lambda: read_published_table(table))
