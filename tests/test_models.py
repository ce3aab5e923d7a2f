"""Model resolution (tinypower.models): the cache folder, the default and ``reference`` choices
against an empty and a filled cache, explicit paths, corrupt files, and fetch_reference_models
with no network (cached files, a failed download, a download that is not a model)."""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.request
from pathlib import Path

import pytest

from tinypower.models import (
    ModelResolutionError,
    cache_dir,
    fetch_reference_models,
    resolve_model,
)
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.synthetic import SYNTHETIC_LABEL

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
REFERENCE_FILES = (
    "kws_ref_model.tflite",
    "vww_96_int8.tflite",
    "pretrainedResnet_quant.tflite",
    "ad01_int8.tflite",
)
AD_URL = (
    "https://raw.githubusercontent.com/mlcommons/tiny/master/benchmark/training/"
    "anomaly_detection/trained_models/ad01_int8.tflite"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$TINYPOWER_CACHE``; returns the models folder inside it (not yet created)."""
    monkeypatch.setenv("TINYPOWER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def fill_cache(cache: Path, names: tuple[str, ...]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        (cache / name).write_bytes(b"placeholder for " + name.encode())


def no_network(*args, **kwargs):
    pytest.fail(f"urlopen called with {args}: a cached model was downloaded again")


def test_cache_dir_follows_tinypower_cache(cache: Path) -> None:
    assert cache_dir() == cache


def test_cache_dir_falls_back_to_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TINYPOWER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "tinypower" / "models"


def test_kws_default_with_empty_cache_is_the_synthetic_model(cache: Path) -> None:
    resolved = resolve_model(get_suite("kws01"), None)
    assert resolved.source == "synthetic"
    assert resolved.path is None
    assert resolved.note == SYNTHETIC_LABEL
    assert resolved.name == "built-in synthetic KWS DS-CNN"
    assert resolved.info.input_shape == (1, 49, 10, 1)
    assert resolved.info.output_shape == (1, 12)
    assert resolved.sha256 == hashlib.sha256(resolved.data).hexdigest() == resolved.info.sha256


def test_reference_with_empty_cache_says_to_fetch(cache: Path) -> None:
    with pytest.raises(ModelResolutionError, match="run `tinypower models fetch`") as exc:
        resolve_model(get_suite("kws01"), "reference")
    assert str(cache / "kws_ref_model.tflite") in str(exc.value)


@pytest.mark.parametrize("model", [None, "synthetic"])
def test_vww_has_no_built_in_model(cache: Path, model: str | None) -> None:
    with pytest.raises(ModelResolutionError, match="no built-in model for vww01"):
        resolve_model(get_suite("vww01"), model)


def test_kws_default_prefers_the_cached_reference_model(cache: Path) -> None:
    source = MODELS / "kws_ref_model.tflite"
    if not source.is_file():
        pytest.skip(f"MLPerf Tiny reference models not found at {MODELS} (shared data folder)")
    cache.mkdir(parents=True)
    shutil.copyfile(source, cache / "kws_ref_model.tflite")
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    for model in (None, "reference"):
        resolved = resolve_model(get_suite("kws01"), model)
        assert resolved.source == "reference"
        assert resolved.path == cache / "kws_ref_model.tflite"
        assert resolved.name == "kws_ref_model.tflite"
        assert resolved.note == ""
        assert resolved.sha256 == expected == resolved.info.sha256
        assert resolved.info.input_zero_point == 83


def test_explicit_path_that_does_not_exist(cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelResolutionError, match=f"model file {missing} does not exist"):
        resolve_model(get_suite("kws01"), str(missing))


def test_corrupt_file_mentions_the_tflite_identifier(cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"<html>404: Not Found</html>")
    with pytest.raises(ModelResolutionError, match="TFL3") as exc:
        resolve_model(get_suite("kws01"), str(bad))
    assert str(exc.value).startswith(f"{bad}:")


def test_corrupt_cached_reference_is_an_error_not_a_fallback(cache: Path) -> None:
    fill_cache(cache, ("kws_ref_model.tflite",))
    with pytest.raises(ModelResolutionError, match="TFL3"):
        resolve_model(get_suite("kws01"), None)


def test_fetch_with_everything_cached_downloads_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_cache(cache, REFERENCE_FILES)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    messages: list[str] = []
    paths = fetch_reference_models(progress=messages.append)
    assert paths == [cache / name for name in REFERENCE_FILES]
    assert len(messages) == 4
    assert all(m.endswith("(cached)") for m in messages)


def test_fetch_failure_names_the_url_and_the_destination(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_cache(cache, REFERENCE_FILES[:3])

    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ModelResolutionError, match="network unreachable") as exc:
        fetch_reference_models(progress=lambda msg: None)
    assert AD_URL in str(exc.value)
    assert str(cache / "ad01_int8.tflite") in str(exc.value)


def serve_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>rate limited</html>")
    )


def test_fetched_garbage_is_refused_and_nothing_is_cached(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_cache(cache, REFERENCE_FILES[:3])
    serve_garbage(monkeypatch)
    with pytest.raises(ValueError, match="TFL3"):
        fetch_reference_models(progress=lambda msg: None)
    assert sorted(p.name for p in cache.iterdir()) == sorted(REFERENCE_FILES[:3])


def test_fetched_garbage_is_a_resolution_error_naming_the_url(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_cache(cache, REFERENCE_FILES[:3])
    serve_garbage(monkeypatch)
    with pytest.raises(ModelResolutionError) as exc:
        fetch_reference_models(progress=lambda msg: None)
    assert AD_URL in str(exc.value)
