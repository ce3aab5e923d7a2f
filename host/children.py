"""Child processes that die with their parent.

A run starts helpers (QEMU for the emulated board, LoadGen for an edge SUT); if the runner is
killed with ``kill -9`` or crashes, no ``finally`` runs to stop them. On Linux the kernel can
do it: ``PR_SET_PDEATHSIG`` in the child, before ``exec``, asks for SIGKILL when the thread
that started it exits. Pass :func:`die_with_parent` as ``subprocess.Popen(preexec_fn=...)``.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the starting thread's process dies."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
