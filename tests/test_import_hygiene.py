"""tui/ never imports torch & co.; engine/ never imports textual or rich (fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "diffusers", "peft", "onnxruntime", "transformers"]
UI = ["textual", "rich"]


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def tui_modules() -> list[str]:
    names = []
    for path in sorted((REPO / "tui").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_tui_never_imports_torch_diffusers_peft_onnxruntime():
    imports = "\n".join(f"import {name}" for name in tui_modules())
    loaded = modules_after(imports)
    assert "tui" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_engine_never_imports_textual_or_rich():
    engine_modules = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("__init__", "__main__"):
            if parts[-1] == "__main__":
                continue
            parts = parts[:-1]
        engine_modules.append(".".join(parts))
    code = "\n".join(f"import {name}" for name in engine_modules)
    loaded = modules_after(code)
    assert "engine.protocol" in loaded
    assert [m for m in UI if m in loaded] == []
    rich_like = [m for m in loaded if m.startswith(("textual.", "rich."))]
    assert rich_like == []


def test_engine_config_and_protocol_are_light():
    # The TUI imports these two: they must not pull torch in either.
    loaded = modules_after("import engine.config, engine.protocol, engine.errors")
    assert [m for m in HEAVY if m in loaded] == []


def test_queue_folder_is_not_a_package():
    assert not (REPO / "queue" / "__init__.py").exists()
