"""The import layers of pyproject.toml's [tool.importlinter] contracts hold (import-linter).

import-linter reads every import statement, function-level ones included, so a lazy `import torch`
deep in a helper that the TUI calls is caught here even when no test happens to run that path
(tests/test_import_hygiene.py checks what a fresh interpreter actually loads).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept():
    out = lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr
    # Every contract of pyproject.toml was checked, none skipped.
    assert "4 kept, 0 broken" in out.stdout, out.stdout


def test_a_broken_layer_is_reported_with_its_import_chain(tmp_path):
    # The trainer imports torch: a contract forbidding it must fail and name the importing line.
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["engine"]\ninclude_external_packages = true\n\n'
        '[[tool.importlinter.contracts]]\nname = "trainer without torch"\ntype = "forbidden"\n'
        'source_modules = ["engine.train.loop"]\nforbidden_modules = ["torch"]\n',
        encoding="utf-8",
    )
    out = lint_imports("--config", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "trainer without torch BROKEN" in out.stdout
    assert "engine.train.loop -> torch (l." in out.stdout
