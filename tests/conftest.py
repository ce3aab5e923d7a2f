"""Fixtures shared by the firmware tests: the tools they need, found on PATH or else skipped
on a developer's machine and failed in CI (which installs them, see .ci/run)."""

from __future__ import annotations

import os
import shutil

import pytest

APT_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


def require_tools(*names: str) -> None:
    """Skip without the tools here, fail when the env var CI is set."""
    missing = [t for t in names if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not on PATH: apt-get install {APT_PACKAGES}"
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
