"""Start the MLCommons Tiny runner's own ``main.py``, unmodified, on simulated instruments.

Used by ``test_mlcommons_runner.py`` as ``python mlcommons_launch.py RUNNER_DIR PORTS_JSON
-- MAIN_ARGS...`` in a scratch working directory (the runner writes ``sessions/`` there).

The runner finds its instruments by USB enumeration (``device_manager.py``:
``serial.tools.list_ports.comports`` matched on VID/PID, then ``usb.core.find`` for USB-only
meters). A pty has no USB descriptor, so that one boundary is replaced: ``comports`` lists the
simulators' ptys with the VID/PID of the instruments they stand for (from PORTS_JSON), and
``usb.core.find`` finds no USB-only device. Everything after discovery (pyserial on the ptys,
the runner's protocol code, its scoring) is the runner's own.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def _fake_ports(ports: list[dict]) -> list:
    from serial.tools.list_ports_common import ListPortInfo

    infos = []
    for p in ports:
        info = ListPortInfo(p["device"], skip_link_detection=True)
        info.vid, info.pid = p["vid"], p["pid"]
        info.description = p.get("description", "n/a")
        infos.append(info)
    return infos


def main() -> None:
    runner_dir, ports_json, sep, *main_args = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: mlcommons_launch.py RUNNER_DIR PORTS_JSON -- MAIN_ARGS...")
    with open(ports_json) as f:
        ports = json.load(f)

    import serial.tools.list_ports
    import usb.core

    serial.tools.list_ports.comports = lambda include_links=False: _fake_ports(ports)
    usb.core.find = lambda *args, **kwargs: iter(())

    main_py = os.path.join(runner_dir, "main.py")
    sys.path.insert(0, runner_dir)
    sys.argv = [main_py, *main_args]
    runpy.run_path(main_py, run_name="__main__")


if __name__ == "__main__":
    main()
