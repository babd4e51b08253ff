"""`loratui logs`: review loss logs.

    loratui logs [RUN_OR_CSV ...] [--workspace DIR] [--only]   open the history screen, drawing the given runs
    loratui logs --summary [--workspace DIR] [--json] [RUN_OR_CSV ...]   print the run table for scripts

The summary path imports no Textual (scripts stay fast): it is engine/runs (the headless runs
package); the screen is imported only when opened.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import LoratuiError
from engine.runs.format import fmt_date, fmt_duration, fmt_loss
from engine.runs.summary import discover_runs, summarize_run

SUMMARY_COLUMNS = (
    "name",
    "date",
    "base model",
    "steps",
    "final loss",
    "final val",
    "best val",
    "duration",
    "status",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loratui logs", description="Review loss logs of runs and CSV files.")
    p.add_argument(
        "targets", nargs="*", help="run folders (runs/<name>) or loss CSV files (ours or other tools')"
    )
    p.add_argument("--workspace", default=".", help="workspace whose runs/*/loss.csv are listed (default: .)")
    p.add_argument("--summary", action="store_true", help="print the run table instead of opening the screen")
    p.add_argument("--json", action="store_true", help="with --summary: one JSON list instead of a table")
    p.add_argument("--only", action="store_true", help="list only the given targets, not the workspace runs")
    return p


def summary_rows(workspace: Path, targets: list[Path], only: bool = False):
    """Summaries of the workspace runs (unless `only`) followed by the given targets."""
    runs = [] if only and targets else discover_runs(workspace)
    seen = {p.resolve() for p in runs}
    runs += [t for t in targets if t.resolve() not in seen]
    return [summarize_run(p) for p in runs]


def format_table(summaries) -> str:
    """Plain aligned text, one run per line; unreadable logs get their reason on the next line."""
    rows = [SUMMARY_COLUMNS]
    for s in summaries:
        rows.append(
            (
                s.name,
                fmt_date(s.date),
                Path(s.base_model).name if s.base_model else "-",
                str(s.steps) if s.rows else "-",
                fmt_loss(s.final_loss) or "-",
                fmt_loss(s.final_val) or "-",
                fmt_loss(s.best_val) or "-",
                fmt_duration(s.duration, "-"),
                s.status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_COLUMNS))]
    numeric = {3, 4, 5, 6, 7}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    notes = [f"  {s.name}: {s.error}" for s in summaries if s.error] + [
        f"  {s.warning}" for s in summaries if s.warning
    ]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def _target(workspace: Path, name: str) -> Path:
    """A bare run name means that run of the workspace (`loratui logs mychar-v1`), also when a folder
    of that name without a loss log sits in the current folder (the demo workspace has both demo/
    and runs/demo/)."""
    path, run = Path(name), workspace / "runs" / name
    if run.is_dir() and (not path.exists() or (path.is_dir() and not (path / "loss.csv").exists())):
        return run
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    workspace = Path(args.workspace)
    targets = [_target(workspace, t) for t in args.targets]
    missing = [t for t in targets if not t.exists()]
    if missing:
        err = LoratuiError(
            f"not found: {missing[0]}",
            hint="give a run name, a run folder (runs/<name>) or a loss CSV file",
            where=str(missing[0]),
        )
        print(err.render(), file=sys.stderr)
        return 2
    if args.summary:
        summaries = summary_rows(workspace, targets, args.only)
        if args.json:
            print(json.dumps([s.to_dict() for s in summaries], indent=2))
        elif summaries:
            print(format_table(summaries))
        else:
            print(f"no runs with a loss.csv in {workspace / 'runs'}", file=sys.stderr)
        return 1 if any(s.error for s in summaries) else 0
    app = logs_app(workspace, targets, only=args.only)
    app.run()
    return 0


def logs_app(workspace: Path, targets: list[Path], only: bool = False):
    """A small App that opens the history screen at once (Textual imported only here)."""
    from textual.app import App
    from textual.binding import Binding

    from tui.screens.history import HistoryScreen

    class _LogsApp(App):
        TITLE = "loratui logs"
        BINDINGS = [
            Binding("q", "quit", "Quit"),
            Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.history = HistoryScreen(
                workspace, extra=targets, select=targets, scan_workspace=not (only and targets)
            )

        def on_mount(self) -> None:
            self.push_screen(self.history)

    return _LogsApp()
