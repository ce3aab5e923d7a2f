"""tinypower: open measurement kit for the energy efficiency of ML systems.

The Python API (docs/python-api.md): ``tinypower.measure(...)`` runs an MLPerf Tiny mode and
returns its scored record; ``tinypower.EnergyMonitor`` measures the energy of code blocks.
They are imported on first use, so ``import tinypower`` (and the CLI's start) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EnergyMonitor", "MonitorError", "WindowEnergy", "measure"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tinypower import api

        return getattr(api, name)
    raise AttributeError(f"module 'tinypower' has no attribute {name!r}")
