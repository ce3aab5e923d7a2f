"""A normal install works: build the wheel, install it (not editable) into a fresh venv outside
the repository, and run ``tinypower`` there.

Nothing is downloaded: the wheel is built without build isolation from this environment's
setuptools, installed with ``--no-deps --no-index``, and the fresh venv reaches the
already-installed dependencies through a ``.pth`` file naming the site-packages folders on
this interpreter's path (a ``.pth`` line only adds a folder to ``sys.path``; the editable
install's own finder there is not activated, so ``tinypower`` itself comes from the wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("host", "energy_monitor", "boards", "suts", "firmware", "pyproject.toml", "setup.py",
           "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the tinypower wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so building writes nothing into the checkout
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(src)], check=True, timeout=300)
    wheel = next((tmp / "dist").glob("tinypower-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("tinypower/_data/boards/sim-m4.toml", "tinypower/_data/suts/rapl.toml",
                    "tinypower/_data/firmware/harness/th_main.c",
                    "tinypower/_data/firmware/ports/qemu-an386/port.c",
                    "tinypower/suites/labels/kws01.y_labels.csv"):
        assert shipped in names, f"{shipped} missing from {wheel.name}"
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "reuse-test-dependencies.pth").write_text(
        "\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    return env_dir / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TINYPOWER_BOARDS", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_installed_wheel_carries_boards_suts_and_firmware(installed: Path, tmp_path: Path) -> None:
    done = _run(installed, "python", "-c",
                "import tinypower, tinypower.boards as b, tinypower.firmware as f; "
                "print(tinypower.__file__); print(b.available_boards()); "
                "print((f.HARNESS_DIR / 'th_main.c').is_file())", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, boards, harness = done.stdout.splitlines()
    assert Path(where).is_relative_to(installed.parent), where  # the wheel, not the checkout
    assert "sim-m4" in boards and "qemu-an386" in boards
    assert harness == "True"


def test_installed_wheel_carries_the_compiled_float32_kernel(
        installed: Path, tmp_path: Path, c_compiler: None) -> None:
    """setup.py compiles energy_monitor/_f32dot.c into the wheel (the *.so of the checkout's
    editable install is not copied: the wheel's own build made this one)."""
    done = _run(installed, "python", "-c", "import energy_monitor._f32dot as k, "
                "energy_monitor.trace as t; print(k.__file__); print(t.float32_kernel())",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, kernel = done.stdout.splitlines()
    assert Path(where).is_relative_to(installed.parent), where
    assert kernel != "None"


def test_installed_tinypower_measures_and_diagnoses(installed: Path, tmp_path: Path) -> None:
    version = _run(installed, "tinypower", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("tinypower 0."), version
    measured = _run(installed, "tinypower", "measure", "--runs-dir", str(tmp_path / "runs"),
                    cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    assert "SIMULATED" in measured.stdout
    assert len(list((tmp_path / "runs").glob("*-sim-m4-kws01-*"))) == 2
    doctor = _run(installed, "tinypower", "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    assert "virtual lab" in doctor.stdout
