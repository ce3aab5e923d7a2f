"""Fixtures shared by several test modules: the tools the firmware tests need (found on PATH,
or else skipped on a developer's machine and failed in CI, which installs them, see .ci/run),
and one pair of virtual-lab sessions that result tests read (and copy before changing)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tinypower.boards import load_board
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

APT_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


def require_tools(*names: str, packages: str = APT_PACKAGES) -> None:
    """Skip without the tools here, fail when the env var CI is set."""
    missing = [t for t in names if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not on PATH: apt-get install {packages}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def tools() -> None:
    """arm-none-eabi-gcc and qemu-system-arm: building and running the emulated board."""
    require_tools("arm-none-eabi-gcc", "qemu-system-arm")


@pytest.fixture(scope="module")
def arm_toolchain() -> None:
    """arm-none-eabi-gcc (and its binutils): building firmware for any board."""
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-size")


@pytest.fixture(scope="module")
def c_compiler() -> None:
    """gcc: setup.py compiling energy_monitor/_f32dot.c when a wheel is built."""
    require_tools("gcc", packages="gcc")


@pytest.fixture(scope="session")
def sessions(tmp_path_factory) -> dict[str, Path]:
    """A valid kws01 energy and performance session of the virtual lab, in one runs folder."""
    runs = tmp_path_factory.mktemp("runs")
    suite = get_suite("kws01")
    out = {}
    for mode in ("energy", "performance"):
        outcome = run(RunRequest(
            board=load_board("sim-m4"), suite=suite, model=resolve_model(suite, "synthetic"),
            dataset=synthetic_inputs(suite), mode=mode, runs_dir=runs))
        assert outcome.ok, outcome.error
        out[mode] = outcome.session.folder
    return out
