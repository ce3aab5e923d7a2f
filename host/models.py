"""Which model a run measures: a file, a cached MLPerf Tiny reference model, or the built-in one.

Resolution for ``--model``:
- a path to a ``.tflite`` file: that file;
- ``reference``: the suite's MLPerf Tiny reference model from the local cache
  (``tinypower models fetch`` fills it from the public MLCommons repository);
- ``synthetic``: the built-in KWS-shaped model with seeded weights (kws01 only);
- nothing: the cached reference model if there is one, else the built-in model (kws01), so the
  default works offline on a fresh machine. The result always says which model was used.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinypower.suites.benchmarks import SUITES, Suite
from tinypower.suites.model_info import ModelError, ModelInfo, read_model_info
from tinypower.suites.synthetic import SYNTHETIC_LABEL, synthetic_kws_model

REFERENCE_URL = (
    "https://raw.githubusercontent.com/mlcommons/tiny/master/benchmark/training/{path}"
)
REFERENCE_FOLDERS = {  # under benchmark/training/ in mlcommons/tiny
    "kws_ref_model.tflite": "keyword_spotting/trained_models",
    "vww_96_int8.tflite": "visual_wake_words/trained_models",
    "pretrainedResnet_quant.tflite": "image_classification/trained_models",
    "ad01_int8.tflite": "anomaly_detection/trained_models",
}


class ModelResolutionError(ValueError):
    """No model can be found for the request; the message says how to get one."""


@dataclass(frozen=True)
class ResolvedModel:
    data: bytes
    source: str  # "file", "reference" or "synthetic"
    path: Path | None
    info: ModelInfo
    note: str = ""  # shown with every result, e.g. the synthetic-weights label

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def name(self) -> str:
        return self.path.name if self.path else "built-in synthetic KWS DS-CNN"


def cache_dir() -> Path:
    """``$TINYPOWER_CACHE/models``, else ``$XDG_CACHE_HOME/tinypower/models`` (``~/.cache``)."""
    if os.environ.get("TINYPOWER_CACHE"):
        return Path(os.environ["TINYPOWER_CACHE"]) / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tinypower" / "models"


def resolve_model(suite: Suite, model: str | None) -> ResolvedModel:
    if model not in (None, "reference", "synthetic"):
        path = Path(model)
        if not path.is_file():
            raise ModelResolutionError(f"model file {path} does not exist")
        return _from_file(path, "file")
    cached = cache_dir() / suite.reference_model
    if model == "reference" or (model is None and cached.is_file()):
        if not cached.is_file():
            raise ModelResolutionError(
                f"the {suite.name} reference model is not cached at {cached}: run "
                "`tinypower models fetch` (needs internet), or pass --model PATH"
            )
        return _from_file(cached, "reference")
    if suite.name != "kws01":
        raise ModelResolutionError(
            f"no built-in model for {suite.name}: run `tinypower models fetch` for the MLPerf "
            "Tiny reference models, or pass --model PATH"
        )
    data = synthetic_kws_model()
    return ResolvedModel(data, "synthetic", None, read_model_info(data), SYNTHETIC_LABEL)


def _from_file(path: Path, source: str) -> ResolvedModel:
    data = path.read_bytes()
    try:
        info = read_model_info(data)
    except ValueError as exc:
        raise ModelResolutionError(f"{path}: {exc}") from exc
    return ResolvedModel(data, source, path, info)


def check_fits(model: ResolvedModel, flash_bytes: int | None, board: str) -> None:
    """Refuse a model larger than the board's flash before any interpreter or firmware build
    sees it (a padded 300 MB model must be a clear error, not a crash)."""
    if flash_bytes is not None and len(model.data) > flash_bytes:
        raise ModelResolutionError(
            f"model {model.name} is {len(model.data):,} bytes; {board}'s flash holds "
            f"{flash_bytes:,} ([memory] flash_bytes): use a smaller model or another board"
        )


def fetch_reference_models(progress=print) -> list[Path]:
    """Download the MLPerf Tiny reference models into the cache (skipping ones already there)."""
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    fetched = []
    for suite in SUITES.values():
        dest = target / suite.reference_model
        if dest.is_file():
            progress(f"{suite.name}: {dest} (cached)")
            fetched.append(dest)
            continue
        url = REFERENCE_URL.format(
            path=f"{REFERENCE_FOLDERS[suite.reference_model]}/{suite.reference_model}"
        )
        progress(f"{suite.name}: downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data = response.read()
        except OSError as exc:
            raise ModelResolutionError(
                f"could not download {url} ({exc}); check the network, or copy the file to {dest}"
            ) from exc
        try:
            read_model_info(data)  # refuse to cache an error page or a truncated file
        except ModelError as exc:
            raise ModelResolutionError(
                f"{url} did not return a TFLite model ({exc}); download it by hand to {dest}"
            ) from exc
        tmp = dest.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
        fetched.append(dest)
    return fetched
