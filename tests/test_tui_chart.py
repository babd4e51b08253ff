"""LossChart: downsampling keeps the shape of 100k-point series; redraws only when data changed."""

from __future__ import annotations

import math

from textual.app import App

from engine.runs.downsample import downsample
from tests.tui_support import wait_until
from tui.runstate import RunState
from tui.screens.run import series_of
from tui.widgets.loss_chart import MARKERS, RAW, SMOOTHED, ChartSeries, LossChart


def test_downsample_edges_keep_spikes_and_bound_size():
    xs = list(range(100_000))
    ys = [1.0] * 100_000
    ys[54_321] = 9.0  # one spike
    ys[12_345] = -3.0  # one dip
    px, py = (a.tolist() for a in downsample(xs, ys, 100, "max"))
    assert len(px) <= 100 and px == sorted(px)
    assert max(py) == 9.0 and 54_321 in px
    lx, ly = (a.tolist() for a in downsample(xs, ys, 100, "min"))
    assert len(lx) <= 100 and min(ly) == -3.0 and 12_345 in lx and 9.0 not in ly
    mx, my = (a.tolist() for a in downsample(xs, [float(x) for x in xs], 100, "mean"))
    assert len(mx) == 100 and mx == sorted(mx)
    assert abs(my[0] - 499.5) < 1e-9  # mean of the first bucket
    assert [a.tolist() for a in downsample([1, 2], [3, 4], 100)] == [[1, 2], [3, 4]]
    assert [a.tolist() for a in downsample([1, 2, 3], [3, None, float("nan")], 100)] == [[1], [3]]


def test_build_plot_with_several_series_and_bad_values():
    chart = LossChart(title="loss")
    xs = list(range(1000))
    chart.set_series(
        [
            ChartSeries("loss", xs, [1 / (x + 1) for x in xs], RAW),
            ChartSeries("ema", xs, [float("nan")] * 10 + [1 / (x + 1) for x in xs[10:]], SMOOTHED),
            ChartSeries("val", [100, 500], [0.2, 0.1], MARKERS),
            ChartSeries("other run", [0, 1], [None, 0.5], SMOOTHED, colour="magenta"),
        ]
    )
    text = chart.build_plot(80, 20)
    assert "loss" in text and "val" in text and "other run" in text
    assert len(text.splitlines()) == 20
    empty = LossChart(title="loss").build_plot(60, 12)
    assert "waiting for data" in empty


class ChartApp(App):
    def compose(self):
        yield LossChart(title="loss", interval=0.05)


async def test_chart_redraws_only_when_dirty_and_handles_100k_points():
    state = RunState()
    for step in range(1, 100_001):
        loss = 1 / math.sqrt(step)
        state.apply({"type": "step", "step": step, "total_steps": 100_000, "loss": loss, "loss_ema": loss})
    app = ChartApp()
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.query_one(LossChart)
        chart.set_series(series_of(state))
        await wait_until(
            pilot, lambda: not chart._dirty and "waiting" not in chart._rendered.plain, what="first draw"
        )
        drawn = chart.redraws
        await pilot.pause(0.4)
        assert chart.redraws == drawn  # nothing changed, nothing rebuilt
        assert "100000" in chart._rendered.plain.replace(".0", "") or "1e+05" in chart._rendered.plain
        chart.mark_dirty()
        await wait_until(pilot, lambda: chart.redraws == drawn + 1, what="redraw after change")


def test_growing_lists_are_converted_by_their_tail_and_edits_are_seen():
    from engine.runs.downsample import AppendOnlyArrays

    arrays = AppendOnlyArrays()
    values = [1.0, 2.0]
    first = arrays.array(values)
    values.append(3.0)
    assert arrays.array(values).tolist() == [1.0, 2.0, 3.0] and first.tolist() == [1.0, 2.0]
    values[0] = 9.0  # not append-only any more: converted again, never a stale prefix
    assert arrays.array(values).tolist() == [9.0, 2.0, 3.0]
    values[:] = [5.0]
    assert arrays.array(values).tolist() == [5.0]
    # The chart keeps its conversions between drawings: a point appended later is drawn.
    chart = LossChart(title="loss")
    xs, ys = [1, 2, 3], [0.5, 0.4, 0.45]
    chart.set_series([ChartSeries("ema", xs, ys, SMOOTHED)])
    before = chart.build_plot(60, 12)
    xs.append(4)
    ys.append(5.0)  # a jump: the y axis grows to 5
    after = chart.build_plot(60, 12)
    assert "5.0" in after and "5.0" not in before
