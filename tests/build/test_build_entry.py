"""The Nuitka entry of the zone binary resolves our packages as Python does from the repository root.

Nuitka (like ``python script.py``) searches the entry script's own directory first for every import. Were the
entry zoneinit/multicall.py itself, zoneinit/idm/ would shadow the top-level idm package in the binary, so the
entry sits alone in build/entry/; this runs its self-test (every lazy import of the applets) the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_entry_sits_alone_in_its_directory():
    from zonebuild.initrd_compile import ENTRY

    assert {p.name for p in ENTRY.parent.iterdir()} - {"__pycache__"} == {ENTRY.name}


def test_the_entry_script_imports_every_lazy_module_from_the_right_package():
    from zonebuild.initrd_compile import ENTRY

    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(ENTRY), "selftest"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok idm.server" in result.stdout and "ok zoneinit.idm.service" in result.stdout
