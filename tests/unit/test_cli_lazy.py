"""The `corral` group imports a verb's module only when that verb runs."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from corral.cli import COMMANDS, main

PROBE = """
import sys
from corral.cli import main
main(["serve", "--help"], standalone_mode=False)
print(" ".join(sorted(m for m in sys.modules if m.startswith(("corral.cli.", "runtime.")))))
"""


def test_help_lists_every_verb() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"  {name} " in out


def test_a_verb_imports_only_its_own_modules() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    loaded = done.stdout.split()
    assert "corral.cli.serve" in loaded
    for other in ("corral.cli.doctor", "corral.cli.machine", "corral.cli.rootfs"):
        assert other not in loaded
    assert not [m for m in loaded if m.startswith(("runtime.machine", "runtime.doctor"))]
