"""Footer: Textual's footer without its watcher leak.

Textual 8.2.8's Footer recomposes on every `refresh_bindings()` and each new FooterKey calls
`data_bind(compact=Footer.compact)`, which appends a watcher to the Footer's `compact` reactive.
Textual prunes that list only when `compact` changes (never, in this app), so the removed keys'
watchers pile up, and each `watch()` first scans the whole list for a duplicate: after ~20 minutes
of refreshes a key press took 30-90 s. This subclass drops the watchers of keys that are gone after
each recompose, so the list stays as long as the footer is wide.

Callers still refresh bindings only when what a key can do changed (check_action), never on a timer.
"""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter

WATCHERS_ATTR = "__watchers"
"""Where textual.reactive._watch keeps an object's watchers (set with setattr, so not name-mangled)."""


class Footer(TextualFooter):
    """Drop-in for textual.widgets.Footer."""

    async def recompose(self) -> None:
        await super().recompose()
        self.prune_watchers()

    def prune_watchers(self) -> int:
        """Remove watchers whose node is no longer mounted; returns how many are left."""
        watchers = getattr(self, WATCHERS_ATTR, {})
        left = 0
        for entries in watchers.values():
            entries[:] = [(node, callback) for node, callback in entries if node.is_attached]
            left += len(entries)
        return left
