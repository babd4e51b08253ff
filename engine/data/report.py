"""The dataset report of `python -m engine check` (engine.check), as data, JSON or text.

The report lists images per folder with their repeats, the bucket histogram, and everything that
would spoil a run: missing or empty captions, unreadable files, captions longer than CLIP reads,
duplicate images, images more elongated than max_aspect. This module reads only a dataset scan;
the checks of the model, the run folder and the other modes are engine.check's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.data.captions import CLIP_MAX_TOKENS
from engine.data.scan import DatasetScan

# Longest entry lists shown in the text report; JSON always carries everything.
_SHOW = 10
_BAR_WIDTH = 30


@dataclass
class DatasetReport:
    name: str
    mode: str
    model: str
    scan: DatasetScan | None  # None for modes without a dataset (ileco) or when the scan failed
    problems: list[str] = field(default_factory=list)  # each one stops the run
    # Environment variables that name config keys (engine.config.compat.EnvValue.to_dict()).
    environment: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth fixing, the run can go ahead

    @property
    def trainable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready data for the TUI's dataset view."""
        out: dict = {
            "name": self.name,
            "mode": self.mode,
            "model": self.model,
            "trainable": self.trainable,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "environment": list(self.environment),
        }
        s = self.scan
        if s is not None:
            out.update(
                total_images=s.total_images,
                total_samples_per_epoch=s.total_samples_per_epoch,
                folders=[
                    {
                        "folder": f.folder,
                        "path": str(f.path),
                        "images": f.images,
                        "repeats": f.repeats,
                        "samples": f.samples,
                    }
                    for f in s.folders
                ],
                buckets=[list(b) for b in s.buckets],
                native_sizes=s.native_sizes,
                bucket_histogram=[
                    {"width": b[0], "height": b[1], "images": n} for b, n in s.bucket_histogram.items()
                ],
                missing_captions=list(s.missing_captions),
                empty_captions=list(s.empty_captions),
                unreadable=[{"image": r, "reason": why} for r, why in s.unreadable],
                bad_captions=[{"file": r, "reason": why} for r, why in s.bad_captions],
                unused=[{"file": r, "reason": why} for r, why in s.unused],
                long_captions=[{"image": r, "tokens": n} for r, n in s.long_captions],
                duplicates=[list(g) for g in s.duplicates],
                clamped_aspect=[{"image": r, "aspect": a} for r, a in s.clamped_aspect],
                upscaled=list(s.upscaled),
                skipped_folders=list(s.skipped_folders),
                token_counter=s.token_counter,
            )
        return out


def add_scan_findings(report: DatasetReport, cfg, s: DatasetScan) -> DatasetReport:
    """Set `report.scan` and add what the scan of cfg's dataset found: problems that stop the run,
    warnings worth fixing. Pure: reads only the scan and cfg.dataset."""
    report.scan = s
    ds = cfg.dataset
    if not s.items:
        if s.unreadable:
            report.problems.append(f"no usable images: all {len(s.unreadable)} image files are unreadable")
        elif s.skipped_folders:
            report.problems.append("no usable images: every folder has 0 repeats")
        else:
            dirs = ", ".join(str(cfg.resolve_path(d)) for d in ds.dirs)
            report.problems.append(f"no images found in dataset.dirs ({dirs})")
    if s.unreadable:
        report.warnings.append(f"{len(s.unreadable)} unreadable image file(s) will be skipped")
    if s.unused:
        report.warnings.append(
            f"{len(s.unused)} file(s) in the dataset folders are not used (listed under 'not used')"
        )
    for rel, why in s.bad_captions:
        report.problems.append(f"caption file {rel} {why}; save it as UTF-8")
    if s.missing_captions and cfg.caption_auto.tagger:
        report.warnings.append(
            f"{len(s.missing_captions)} image(s) have no caption file; the WD14 tagger will caption them first"
        )
    elif s.missing_captions:
        fallback = f'the phrase "{ds.phrase}"' if ds.phrase.strip() else "an empty caption"
        if ds.trigger_word.strip():
            fallback += f' with the trigger word "{ds.trigger_word.strip()}"'
        report.warnings.append(f"{len(s.missing_captions)} image(s) have no caption file and get {fallback}")
    if s.empty_captions:
        report.warnings.append(f"{len(s.empty_captions)} caption file(s) are empty")
    if s.long_captions:
        report.warnings.append(
            f"{len(s.long_captions)} caption(s) are longer than {CLIP_MAX_TOKENS} tokens and will be cut off"
        )
    if s.duplicates:
        extra = sum(len(g) - 1 for g in s.duplicates)
        report.warnings.append(f"{extra} duplicate image(s): the same file content appears more than once")
    if s.clamped_aspect:
        report.warnings.append(
            f"{len(s.clamped_aspect)} image(s) are more elongated than max_aspect {ds.max_aspect:g} and will be cropped"
        )
    if s.skipped_folders:
        report.warnings.append(f"{len(s.skipped_folders)} folder(s) with 0 repeats are skipped")
    return report


# --- text rendering ---------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _more(items: list, shown: int) -> list[str]:
    return [f"    ... and {len(items) - shown} more"] if len(items) > shown else []


def render_text(report: DatasetReport) -> str:
    """The report as a user reads it in a terminal."""
    lines = [f"run: {report.name or '(unnamed)'}   mode: {report.mode}   model: {report.model or '(none)'}"]
    s = report.scan
    if s is not None:
        lines.append("")
        subs = len(s.items) - s.total_images
        sub_note = f" (with {_plural(subs, 'sub-image')})" if subs else ""
        lines.append(
            f"dataset: {_plural(s.total_images, 'image')}, {s.total_samples_per_epoch} samples per epoch{sub_note}"
        )
        width = max([len(f.folder) for f in s.folders] + [6])
        for f in s.folders:
            note = "  (skipped: 0 repeats)" if f.repeats <= 0 else ""
            if f.samples != f.images * f.repeats and f.repeats > 0:
                note = "  (with sub-images)"
            lines.append(
                f"  {f.folder:<{width}}  {f.images:>5} images x {f.repeats:<3} repeats = {f.samples:>6}{note}"
            )
        if s.bucket_histogram and s.native_sizes:
            lines.append("")
            lines.append(
                f"size groups: {len(s.bucket_histogram)} (resize = none: each image at its own size, "
                "rounded down to a multiple of 8; a batch holds one size)"
            )
            peak = max(s.bucket_histogram.values())
            for (bw, bh), n in s.bucket_histogram.items():
                bar = "#" * max(1, round(_BAR_WIDTH * n / peak))
                lines.append(f"  {f'{bw}x{bh}':>11}  {bar:<{_BAR_WIDTH}} {n}")
        elif s.bucket_histogram:
            lines.append("")
            standard = sum(1 for b in s.bucket_histogram if b in set(s.buckets))
            own = len(s.bucket_histogram) - standard
            note = f", {own} smaller (images never enlarged, sub-images)" if own else ""
            lines.append(
                f"buckets: {len(s.bucket_histogram)} in use: {standard} of the {len(s.buckets)} standard sizes{note}"
            )
            peak = max(s.bucket_histogram.values())
            for (bw, bh), n in s.bucket_histogram.items():
                bar = "#" * max(1, round(_BAR_WIDTH * n / peak))
                lines.append(f"  {f'{bw}x{bh}':>11}  {bar:<{_BAR_WIDTH}} {n}")
        sections = [
            ("missing captions", s.missing_captions, lambda r: r),
            ("empty caption files", s.empty_captions, lambda r: r),
            ("unreadable (skipped)", s.unreadable, lambda e: f"{e[0]}: {e[1]}"),
            ("caption files not in UTF-8", s.bad_captions, lambda e: f"{e[0]}: {e[1]}"),
            ("not used", s.unused, lambda e: f"{e[0]}: {e[1]}"),
            (
                f"captions over {CLIP_MAX_TOKENS} tokens (counted with {s.token_counter})",
                s.long_captions,
                lambda e: f"{e[0]}: {e[1]} tokens",
            ),
            ("duplicates (same content)", s.duplicates, lambda g: " = ".join(g)),
            ("more elongated than max_aspect", s.clamped_aspect, lambda e: f"{e[0]}: {e[1]:g}:1"),
            ("enlarged to fill their bucket", s.upscaled, lambda r: r),
        ]
        for title, entries, fmt in sections:
            if not entries:
                continue
            lines.append("")
            lines.append(f"{title}: {len(entries)}")
            lines.extend(f"  {fmt(e)}" for e in entries[:_SHOW])
            lines.extend(_more(entries, _SHOW))
    lines.append("")
    if report.environment:
        lines.append("from the environment:")
        for v in report.environment:
            text = f"  {v['variable']}={v['value']} -> {v['key']}"
            lines.append(text if v["applied"] else f"{text}: ignored ({v['note']})")
        lines.append("")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    for p in report.problems:
        lines.append(f"problem: {p}")
    if report.trainable:
        lines.append("verdict: ready to train")
    else:
        lines.append(f"verdict: NOT trainable ({_plural(len(report.problems), 'problem')})")
    return "\n".join(lines)
