"""Reusable widgets of the TUI: the schema-driven form, the loss chart, run progress and log tail."""

from tui.widgets.loss_chart import ChartSeries, LossChart

__all__ = ["ChartSeries", "LossChart"]
