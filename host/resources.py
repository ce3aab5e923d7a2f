"""Where tinypower's shipped files are: board TOMLs, SUT TOMLs and firmware sources.

A source checkout (and an editable install) has them at the repository root beside ``host/``;
a built wheel carries them as package data under ``tinypower/_data/`` (see pyproject.toml), so
``pip install .`` and pipx installs find the same boards, SUTs and firmware.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("boards", "suts", "firmware")


def data_dir(name: str) -> Path:
    """The folder of shipped ``name`` files (one of SHIPPED), installed or in the checkout."""
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not one of {SHIPPED}")
    here = Path(__file__).resolve().parent
    installed = here / "_data" / name
    return installed if installed.is_dir() else here.parent / name
