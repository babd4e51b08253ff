"""The run queue on disk (the workspace's queue/ folder) and its locks. No torch, no UI."""

from .lock import OwnerLock, QueueBusyError, edit_lock, owner_pid
from .store import QUEUED, RESUMABLE, Entry, QueueStore, now_iso, parse_entry, render_entry, slug

__all__ = [
    "QUEUED",
    "RESUMABLE",
    "Entry",
    "OwnerLock",
    "QueueBusyError",
    "QueueStore",
    "edit_lock",
    "now_iso",
    "owner_pid",
    "parse_entry",
    "render_entry",
    "slug",
]
