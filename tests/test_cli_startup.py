"""`tinypower --help` starts fast because it imports none of the heavy libraries, and the
command list it shows (name and help only) matches what each command really registers.
Speed itself is measured in benchmarks/bench_integration.py, not here."""

from __future__ import annotations

import argparse
import subprocess
import sys

from tinypower.cli import COMMANDS, _parser

HEAVY = ("numpy", "matplotlib", "pyocd", "rich", "serial", "tflite_micro", "mlperf_loadgen")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in action._choices_actions}


def test_help_lists_every_command_with_its_registered_help() -> None:
    real = _subcommands(_parser(everything=True))
    assert real == {name: help_text for name, (_, help_text) in COMMANDS.items()}
    assert _subcommands(_parser()) == real


def test_each_command_gets_its_full_options_alone() -> None:
    for name, (module, _) in COMMANDS.items():
        sub = next(a for a in _parser(name)._actions
                   if isinstance(a, argparse._SubParsersAction)).choices
        assert len(sub[name]._actions) > 1, name  # more than -h: its options are there
        bare = [other for other, (mod, _) in COMMANDS.items()
                if len(sub[other]._actions) == 1]  # a placeholder has -h alone
        assert set(bare) == {other for other, (mod, _) in COMMANDS.items()
                             if other != name and (mod is None or mod != module)}, name


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys\nfrom tinypower.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    loaded = set(done.stdout.split())
    assert "usage: tinypower" in done.stdout
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, sorted(
        m for m in loaded if m.split(".")[0] in HEAVY)
