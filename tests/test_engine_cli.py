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
