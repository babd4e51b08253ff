"""Reading runs: loss logs, run summaries, status, config differences, smoothing and chart data.

Headless: no torch, no Textual or Rich (numpy only). The TUI's history screen and run view,
`loratui logs --summary`, the queue listing and the benchmarks use it. One job per module:

- `columns`: which header column holds what (ours and other tools' CSVs);
- `losslog`: the one loss-CSV reader (`read_loss_csv` -> `LossLog` arrays);
- `summary`: a run folder's summary row (`summarize_run`), its status by the rule of
  engine/runqueue/liveness.py;
- `configdiff`: the settings that differ between two runs;
- `format`: durations, losses and dates as text;
- `smoothing`: EMA (TensorBoard's, debiased) and moving window;
- `series`: a chart series and how many points a chart width keeps (no numpy);
- `downsample`: the one downsampler (mean, low and high edge per bucket);
- `plot`: the plotext drawing of series (the TUI's LossChart shows it, exports write it);
- `overlay`: what the history charts draw (view state, zoom, pan, cursor readout);
- `export`: the history chart as a text file or a PNG.

This file imports nothing, so `engine.runs.format` and `engine.runs.series` stay free of numpy
(the TUI imports them at start).
"""
