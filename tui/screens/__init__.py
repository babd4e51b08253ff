"""Screens of the TUI (one .tcss beside each)."""
