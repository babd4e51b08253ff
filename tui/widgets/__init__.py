"""Reusable widgets of the TUI: the schema-driven form, the loss chart, run progress and log tail.

Import each from its own module (`tui.widgets.loss_chart`...): this package imports nothing, so the
form's widgets do not pull in plotext before the first frame.
"""
