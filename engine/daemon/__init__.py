"""The per-workspace queue daemon's transport: where its Unix socket lives (paths), the listening
side with its clients (hub), and the client side that finds or starts the daemon (connect).

The serve loop itself (queue, workers) is engine/serve.py; this package carries its lines. No torch,
no UI: the TUI imports `engine.daemon.connect`.
"""
