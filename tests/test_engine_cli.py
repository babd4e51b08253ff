"""`python -m engine`: the process entry quiets third-party chatter without overriding the user."""

from __future__ import annotations

from engine.cli import QUIET_ENV, quiet_third_party


def test_quiet_env_is_set_but_never_overrides_the_user():
    env = {"TRANSFORMERS_VERBOSITY": "info"}
    quiet_third_party(env)
    assert env["TRANSFORMERS_VERBOSITY"] == "info"  # the user's choice stays
    assert env["DIFFUSERS_VERBOSITY"] == "error"
    assert env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"  # models are local folders: never the network
    assert set(QUIET_ENV) <= set(env)


def test_argument_errors_name_the_loratui_command():
    """Usage errors speak of the command users type (they read "engine train" / "python -m engine
    check" before), and never show a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for cmd in ("train", "check", "caption"):
        r = subprocess.run(
            [sys.executable, "-m", "engine", cmd], capture_output=True, text=True, cwd=root, timeout=60
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"loratui {cmd}: error: the following arguments are required" in r.stderr, r.stderr
