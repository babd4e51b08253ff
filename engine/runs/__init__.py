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
- `series`: a chart series and the one downsampler to the chart's width;
- `overlay`: what the history charts draw (view state, zoom, pan, cursor readout, exports).

This file imports nothing, so `engine.runs.format` stays free of numpy.
"""
