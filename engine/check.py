"""`python -m engine check CONFIG`: is this run trainable? The report, as text or JSON.

Checks the model paths, the run folder (what `train` would refuse), the mode's own inputs (iLECO
prompts, difference images) and, through engine.data.report, the dataset scan. Exit 0 when the run
can train, 1 with the reasons when not, 2 when the config itself is wrong. Torch-free: it runs
before any model is loaded, from the CLI, the TUI and the queue.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.data.images import image_size
from engine.data.report import DatasetReport, add_scan_findings, render_text
from engine.data.scan import DatasetScan, scan_dataset
from engine.errors import LoratuiError

__all__ = ["DatasetReport", "check", "main", "model_problems", "render_text", "run_folder_warnings"]


def _step_rule_warnings(cfg) -> list[str]:
    """Milestones of train.lr_step_rules a run of train.steps never reaches (epoch runs: unknown here)."""
    from engine.config.steprules import parse_step_rules

    if cfg.train.scheduler != "step" or int(cfg.train.epochs) > 0 or cfg.mode == "difference":
        return []
    steps = int(cfg.train.steps)
    late = [step for step, _ in parse_step_rules(cfg.train.lr_step_rules) if step >= steps]
    if not late:
        return []
    return [
        f"train.lr_step_rules: milestone(s) {', '.join(map(str, late))} come after the last of the "
        f"{steps} steps and never apply"
    ]


def check(cfg, *, scan: DatasetScan | None = None, resume: bool = False) -> DatasetReport:
    """Check a loaded RunConfig: the model path and the dataset. Raises LoratuiError only for errors
    in the config itself (e.g. a dataset folder that does not exist). Whatever will make `train`
    (or `train --resume` when `resume`) refuse the run is a problem, so the verdict never says
    "ready" for a run that will be refused."""
    report = DatasetReport(name=cfg.name, mode=cfg.mode, model=cfg.model.base, scan=None)
    report.environment = [v.to_dict() for v in getattr(cfg, "env_values", [])]
    report.warnings.extend(getattr(cfg, "env_warnings", []))
    report.warnings.extend(_step_rule_warnings(cfg))
    _check_model(cfg, report)
    report.problems.extend(run_folder_warnings(cfg, resume=resume))
    if "collect" in getattr(cfg, "pipeline", ()) and cfg.mode == "lora":
        # The collect step makes (part of) the dataset: check its settings now, its images later.
        from engine.collect.probe import preflight
        from engine.collect.settings import output_folder
        from engine.pipeline import with_collected

        report.problems.extend(preflight(cfg))
        folder = output_folder(cfg)
        if folder.is_dir() and any(folder.iterdir()):
            cfg = with_collected(cfg)
        else:
            report.warnings.append(
                f"{folder} is filled by the collect step: its images are checked once they exist"
            )
            if not cfg.dataset.dirs:
                return report
    if cfg.mode in ("ileco", "difference") and cfg.dataset.dirs:
        report.warnings.append(f"dataset.dirs is not used in mode {cfg.mode}: it trains without a dataset")
    if cfg.mode == "ileco":
        # ileco trains from two prompts; a dataset is neither needed nor read.
        if not cfg.ileco.original_prompt.strip():
            report.problems.append("ileco.original_prompt is empty: mode ileco needs the concept to change")
        elif not cfg.ileco.target_prompt.strip():
            report.warnings.append(
                f'ileco.target_prompt is empty: "{cfg.ileco.original_prompt.strip()}" is erased '
                "(moved towards the empty prompt)"
            )
        return report
    if cfg.mode == "difference":
        copier = str(cfg.difference.load_first_pass or "").strip()
        if copier and not cfg.resolve_path(copier).is_file():
            report.problems.append(f"difference.load_first_pass not found: {cfg.resolve_path(copier)}")
        sizes = {}
        for key in ("original_image", "target_image"):
            value = getattr(cfg.difference, key)
            if not value:
                report.problems.append(f"difference.{key} is empty: mode difference needs both images")
                continue
            try:
                sizes[key] = image_size(cfg.resolve_path(value))
            except LoratuiError as exc:
                report.problems.append(f"difference.{key}: {exc.message}")
        if len(sizes) == 2 and sizes["original_image"] != sizes["target_image"]:
            (ow, oh), (tw, th) = sizes["original_image"], sizes["target_image"]
            report.warnings.append(
                f"difference images differ in size ({ow}x{oh} and {tw}x{th}): both are fitted to "
                "the original's training size; edit one copy of the same picture for a clean difference"
            )
        return report
    return add_scan_findings(report, cfg, scan if scan is not None else scan_dataset(cfg, strict=False))


def model_problems(cfg) -> list[str]:
    """What `check` says about the model paths alone (model.base, model.vae, network.init_from):
    cheap, no dataset scan, no torch."""
    report = DatasetReport(name=cfg.name, mode=cfg.mode, model=cfg.model.base, scan=None)
    _check_model(cfg, report)
    return report.problems


def run_folder_warnings(cfg, *, resume: bool = False) -> list[str]:
    """Why the engine will refuse this run because of its run folder: a folder whose name differs
    only in case, or (save.overwrite = false, fresh start) a LoRA or resumable state it may not
    replace. Problems for `check`; warnings when queued (the entry may be resumed or fixed first)."""
    if not cfg.name:
        return []
    from engine.train.statedirs import case_twin, latest_state

    run_dir = cfg.run_dir()
    twin = case_twin(run_dir)
    if twin is not None:
        return [
            f'{twin} belongs to a run whose name differs from "{cfg.name}" only in case: on a '
            "case-insensitive file system both would share one folder (choose another name)"
        ]
    state = latest_state(run_dir / "state") if resume else None
    if state is not None:
        # A resume continues the run in its own folder (its LoRA is the one being extended), if the
        # config changed only what a resume may change and steps are left to do.
        from engine.train.resume import check_resume, nothing_left

        try:
            check_resume(state, cfg)
        except LoratuiError as exc:
            return [f"{exc.message} ({exc.hint})"]
        left = nothing_left(state, int(cfg.train.steps) if cfg.mode == "lora" and not cfg.train.epochs else 0)
        return [f"{left.message} ({left.hint})"] if left else []
    if cfg.save.overwrite:
        return []
    final = run_dir / f"{cfg.name}.safetensors"
    if final.exists():
        return [
            f"{final} already exists and save.overwrite = false: the run will be refused "
            "(choose another name, or set save.overwrite = true)"
        ]
    left = latest_state(run_dir / "state")
    if left is not None:
        return [
            f"{run_dir} holds the resumable state of an earlier attempt ({left.name}): a fresh start "
            "is refused (resume that run, choose another name, or set save.overwrite = true)"
        ]
    return []


def _check_model(cfg, report: DatasetReport) -> None:
    vae = str(cfg.model.vae or "").strip()
    if vae and not cfg.resolve_path(vae).exists():
        report.problems.append(
            f"model.vae not found: {cfg.resolve_path(vae)} (a VAE .safetensors file or a diffusers VAE "
            "folder; leave it empty to use the model's own VAE)"
        )
    init_from = str(cfg.network.init_from or "").strip()
    if init_from and not cfg.resolve_path(init_from).exists():
        report.problems.append(
            f"network.init_from not found: {cfg.resolve_path(init_from)} (a LoRA .safetensors file "
            "to start from; leave it empty to start fresh)"
        )
    if not cfg.model.base:
        report.problems.append("model.base is empty: set it to a diffusers folder or a .safetensors file")
        return
    path = cfg.resolve_path(cfg.model.base)
    if not path.exists():
        hint = ""
        if Path(cfg.model.base).parts[:2] == ("demo", "models"):
            hint = " (build the demo models with: python -m engine demo)"
        report.problems.append(f"model.base not found: {path}{hint}")
        return
    why = _model_path_problem(path)
    if why:
        report.problems.append(
            f"model.base: {path} {why}; point it at a diffusers folder (with model_index.json) "
            "or an SD1.5 / SD2 / SDXL .safetensors checkpoint"
        )


# The loader's accepted single files (engine/models/loader.py); repeated here because that module
# imports torch and a check must stay cheap.
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def _model_path_problem(path: Path) -> str:
    """Cheap, torch-free look at model.base: what the loader would refuse later, or "" if it looks right.
    Only the .safetensors header is read (8-byte length + JSON), never the tensors."""
    if path.is_dir():
        return "" if (path / "model_index.json").is_file() else "is a folder without model_index.json"
    if path.suffix.lower() not in _SINGLE_FILE_SUFFIXES:
        return "is not a model file (expected a diffusers folder, .safetensors or .ckpt)"
    if path.suffix.lower() != ".safetensors":
        return ""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n <= 0 or n > size - 8:
                return "is not a readable .safetensors file (bad header)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        return f"is not a readable .safetensors file ({exc.__class__.__name__})"
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        return "is a .safetensors file without tensors"
    return ""


# --- command line -----------------------------------------------------------------------------------


def _render_error(exc: LoratuiError) -> str:
    errors = getattr(exc, "errors", None) or [exc]
    return "\n".join(e.render() for e in errors)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine check CONFIG [--set k=v]... [--workspace DIR] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="loratui check", description="Check a run config and its dataset before training."
    )
    parser.add_argument("config", help="run config TOML file")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a key"
    )
    parser.add_argument("--workspace", default=None, help="folder relative paths refer to (default: current)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--resume", action="store_true", help="check for `train --resume` (the run folder's state is kept)"
    )
    parser.add_argument(
        "--env-compat", action="store_true", help="also read LoRACat's variables (LEARNING_RATE, ...)"
    )
    args = parser.parse_args(argv)

    from engine.config import load_config

    try:
        cfg = load_config(args.config, sets=args.sets, workspace=args.workspace, env_compat=args.env_compat)
        report = check(cfg, resume=args.resume)
    except LoratuiError as exc:
        if args.json:
            print(json.dumps({"trainable": False, "error": exc.to_dict()}))
        print(_render_error(exc), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(render_text(report))
    return 0 if report.trainable else 1


if __name__ == "__main__":
    sys.exit(main())
