"""The editor bindings' conversions under node, with the real @codemirror/state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


def test_editor_conversions(node: str, editor_packages: Path) -> None:
    result = subprocess.run(
        [node, "--import", "./editor_modules.mjs", "--test", "editors.test.mjs"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=editor_packages.parent,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# pass 8" in result.stdout, result.stdout[-3000:]
