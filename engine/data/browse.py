"""The dataset as the TUI's dataset browser shows it: one entry per image (torch-free).

Everything comes from the engine's own pieces, so the browser shows what training will do: the scan
(engine.data.scan: folders, repeats, buckets, captions with the trigger word), the crop
(engine.data.buckets.crop_region, the same rule as fit_to_bucket), kohya's keep_tokens
(engine.data.captions.kept_tags) and the check's per-image problems (`problems_by_image`, from a
report dict as `engine check --json` prints it). Tokens are counted approximately here (loading a
tokenizer would pull in transformers); a report from `check` adds its exact long-caption counts and
duplicate groups.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.buckets import crop_region
from engine.data.captions import TokenCounter, apply_trigger, kept_tags, read_caption_raw
from engine.data.edit import caption_path
from engine.data.scan import dataset_roots, scan_dataset
from engine.errors import LoratuiError


@dataclass
class BrowseEntry:
    """One image of the dataset."""

    path: Path
    rel: str  # "<dataset folder name>/<path inside it>", as check names images
    root: Path  # the dataset folder it is under (excluded/ goes there)
    repeats: int
    width: int
    height: int
    bucket: tuple[int, int]
    crop: tuple[int, int, int, int]  # (left, top, right, bottom) in the image's pixels
    caption: str = ""  # as training sees it: trigger word first
    source: str = ""  # file | phrase | none | missing
    caption_file: Path | None = None
    fixed: list[str] = field(default_factory=list)  # tags kept in place (trigger word, keep_tokens)
    rest: list[str] = field(default_factory=list)  # tags shuffle_tags / tag_dropout act on
    problems: list[str] = field(default_factory=list)
    error: str = ""  # the caption file cannot be read (its text is not shown or edited)

    @property
    def tags(self) -> list[str]:
        return [*self.fixed, *self.rest]


@dataclass
class DatasetView:
    entries: list[BrowseEntry]
    unreadable: list[tuple[str, str]]  # (rel, reason): images, or their captions, training refuses

    def tag_frequency(self) -> list[tuple[str, int]]:
        """(tag, images having it), most frequent first (counted once per image, as kohya's ss_tag_frequency)."""
        counts = Counter(tag for e in self.entries for tag in dict.fromkeys(e.tags))
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def problem_kinds(self) -> list[str]:
        return sorted({p.split(":")[0] for e in self.entries for p in e.problems})


def problems_by_image(report: dict) -> dict[str, list[str]]:
    """rel → problem texts, from a check report dict (DatasetReport.to_dict / `check --json`)."""
    out: dict[str, list[str]] = defaultdict(list)
    for rel in report.get("missing_captions") or []:
        out[rel].append("missing caption: no caption file (the phrase is used)")
    for rel in report.get("empty_captions") or []:
        out[rel].append("empty caption: the caption file is empty")
    for row in report.get("long_captions") or []:
        out[row["image"]].append(f"long caption: {row['tokens']} tokens, CLIP keeps 75")
    for group in report.get("duplicates") or []:
        for rel in group:
            others = ", ".join(r for r in group if r != rel)
            out[rel].append(f"duplicate: same bytes as {others}")
    for row in report.get("clamped_aspect") or []:
        out[row["image"]].append(f"aspect clamped: {row['aspect']} is past dataset.max_aspect")
    for rel in report.get("upscaled") or []:
        out[rel].append("upscaled: smaller than its bucket, enlarged")
    for row in report.get("unreadable") or []:
        out[row["image"]].append(f"unreadable: {row['reason']}")
    return dict(out)


def caption_fields(path: Path, cfg) -> dict:
    """caption, source, caption_file, fixed, rest of one image, read now (after an edit, say)."""
    ds = cfg.dataset
    try:
        raw, source = read_caption_raw(path, ds)
    except LoratuiError as exc:  # e.g. a caption file in an encoding training refuses
        file = caption_path(path, ds.caption_extensions)
        return {
            "caption": "",
            "source": "unreadable",
            "caption_file": file,
            "fixed": [],
            "rest": [],
            "error": exc.message,
        }
    caption = apply_trigger(raw, ds.trigger_word)
    fixed, rest = kept_tags(caption, ds)
    file = caption_path(path, ds.caption_extensions) if ds.caption == "file" else None
    return {
        "caption": caption,
        "source": source,
        "caption_file": file,
        "fixed": fixed,
        "rest": rest,
        "error": "",
    }


def browse_dataset(cfg, report: dict | None = None) -> DatasetView:
    """Scan cfg's dataset for browsing. `report`: a check report whose problems are added."""
    from engine.data.report import DatasetReport

    scan = scan_dataset(cfg, token_counter=TokenCounter.approximate(), hash_files=False, strict=False)
    own = problems_by_image(DatasetReport(cfg.name, cfg.mode, "", scan).to_dict())
    extra = problems_by_image(report or {})
    roots = dataset_roots(cfg)
    ds = cfg.dataset
    entries, seen = [], set()
    for item in scan.items:
        if item.path in seen:  # sub-image copies share the file
            continue
        seen.add(item.path)
        root = next((r for r in roots if item.path.is_relative_to(r)), item.path.parent)
        fields = caption_fields(item.path, cfg)
        problems = list(own.get(item.rel, []))
        if fields["error"]:
            problems.append(f"unreadable caption: {fields['error']}")
        problems += [p for p in extra.get(item.rel, []) if p not in problems and not p.startswith("long")]
        entries.append(
            BrowseEntry(
                path=item.path,
                rel=item.rel,
                root=root,
                repeats=item.repeats,
                width=item.width,
                height=item.height,
                bucket=tuple(item.bucket),
                crop=crop_region((item.width, item.height), tuple(item.bucket), ds.resize, ds.crop),
                problems=problems,
                **fields,
            )
        )
    # Images whose caption file training refuses (engine.textfile) are left out of the scan's items.
    bad = [(rel, f"caption: {why}") for rel, why in getattr(scan, "bad_captions", [])]
    return DatasetView(entries=entries, unreadable=[*scan.unreadable, *bad])
