"""Captions: reading them per image, the trigger word, train-time tag augmentation, token counts.

Modes (dataset.caption): "none" trains with empty captions, "phrase" uses dataset.phrase for every
image, "file" reads `<image stem><ext>` for the first of dataset.caption_extensions that exists and
falls back to the phrase when an image has no caption file. The trigger word is put first in every
caption (once). Tag augmentation treats a caption as comma-separated tags, as kohya's trainer does.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

from engine.textfile import read_user_text

# CLIP's context is 77 tokens including the start and end tokens; anything past 75 is cut off.
CLIP_MAX_TOKENS = 75

CAPTION_SOURCES = ("file", "phrase", "none", "missing")


def find_caption_file(image: str | os.PathLike, extensions) -> Path | None:
    """The caption file of `image`: `<stem><ext>` for the first extension in order that exists."""
    p = Path(image)
    for ext in extensions:
        ext = ext if ext.startswith(".") else "." + ext
        candidate = p.with_name(p.stem + ext)
        if candidate.is_file():
            return candidate
    return None


def read_caption_file(path: str | os.PathLike) -> str:
    """Caption text of a file, whitespace collapsed. UTF-8 (BOM or not) and UTF-16 with a BOM are
    read (engine.textfile); any other encoding raises TextEncodingError naming the file."""
    text = read_user_text(path)
    # Line breaks inside a caption are wrapping, not meaning: one line, single spaces.
    return " ".join(text.split())


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def tag_key(tag: str) -> str:
    """A tag as the text encoder sees it, for comparing tags: `Red_Hair`, `red hair`, ` red  hair`
    and `hat \\(x\\)` / `hat (x)` are one tag.

    CLIP's tokenizer lower-cases and splits on whitespace (transformers' CLIPTokenizer,
    `basic_clean` + `whitespace_clean`); WD14 tag files spell spaces as underscores and escape
    parentheses (kohya's `tag_images_by_wd14_tagger.py`, `--remove_underscore`).
    """
    text = tag.replace("\\(", "(").replace("\\)", ")").replace("_", " ")
    return " ".join(text.lower().split())


def apply_trigger(caption: str, trigger: str) -> str:
    """Put `trigger` first in `caption`, once, compared as the tokenizer sees tags (`tag_key`).

    A caption whose first tag (or first words, for prose) is the trigger in another spelling gets the
    trigger's spelling there (`Shapes, red` with trigger `shapes` -> `shapes, red`); when the trigger
    is one of the tags further in, it is moved to the front instead of being added a second time.
    """
    trigger = trigger.strip()
    if not trigger:
        return caption
    tags = split_tags(caption)
    if not tags:
        return trigger
    key = tag_key(trigger)
    keys = [tag_key(t) for t in tags]
    if key in keys:
        rest = [t for t, k in zip(tags, keys) if k != key]
        return ", ".join([trigger, *rest])
    # Prose: "Shapes on a table" already starts with the trigger's words.
    words = r"[\s_]+".join(re.escape(w) for w in key.split())
    m = re.match(words + r"(?=\W|$)", caption.strip(), flags=re.IGNORECASE)
    if m:
        return trigger + caption.strip()[m.end() :]
    return f"{trigger}, {caption.strip()}"


def read_caption(image: str | os.PathLike, ds_cfg) -> tuple[str, str]:
    """(caption, source) for one image following the [dataset] settings.

    source is "file", "phrase", "none", or "missing" (file mode, no caption file: the phrase is used).
    The trigger word is applied.
    """
    caption, source = read_caption_raw(image, ds_cfg)
    return apply_trigger(caption, ds_cfg.trigger_word), source


def read_caption_raw(image: str | os.PathLike, ds_cfg) -> tuple[str, str]:
    """Like read_caption, without the trigger word."""
    mode = ds_cfg.caption
    if mode == "none":
        caption, source = "", "none"
    elif mode == "phrase":
        caption, source = ds_cfg.phrase.strip(), "phrase"
    else:
        found = find_caption_file(image, ds_cfg.caption_extensions)
        if found is None:
            caption, source = ds_cfg.phrase.strip(), "missing"
        else:
            caption, source = read_caption_file(found), "file"
    return caption, source


def kept_tags(caption: str, ds_cfg) -> tuple[list[str], list[str]]:
    """(fixed, rest): the leading tags kept in place (keep_tokens; the trigger word always), the others.

    Tags in `rest` are the ones shuffle_tags shuffles and tag_dropout may drop (kohya's keep_tokens).
    """
    tags = split_tags(caption)
    keep = max(0, int(ds_cfg.keep_tokens))
    trigger = ds_cfg.trigger_word.strip()
    if trigger and tags and tag_key(tags[0]) == tag_key(trigger):
        keep = max(keep, 1)
    return tags[:keep], tags[keep:]


def augment_caption(caption: str, ds_cfg, rng: random.Random) -> str:
    """The caption as used for one training step: caption dropout, tag dropout, tag shuffling.

    The first `keep_tokens` tags stay in place and are never dropped; the trigger word (first tag)
    always stays first. With no augmentation configured the caption is returned unchanged.
    """
    shuffle = bool(ds_cfg.shuffle_tags)
    tag_p = float(ds_cfg.tag_dropout)
    cap_p = float(ds_cfg.caption_dropout)
    if not shuffle and tag_p <= 0 and cap_p <= 0:
        return caption
    if cap_p > 0 and rng.random() < cap_p:
        return ""
    if not shuffle and tag_p <= 0:
        return caption
    fixed, rest = kept_tags(caption, ds_cfg)
    if tag_p > 0:
        rest = [t for t in rest if rng.random() >= tag_p]
    if shuffle:
        rng.shuffle(rest)
    return ", ".join(fixed + rest)


# --- token counting ---------------------------------------------------------------------------------

# Approximation of CLIP's BPE when no tokenizer is at hand: a word is one token, each punctuation
# mark one token. Real BPE splits rare words further, so this undercounts somewhat.
_APPROX_TOKEN = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


class TokenCounter:
    """Counts CLIP tokens of a caption (without the start/end tokens).

    `describe` says how: with the model's own tokenizer, or approximately.
    """

    def __init__(self, count: Callable[[str], int], describe: str, exact: bool) -> None:
        self._count = count
        self.describe = describe
        self.exact = exact

    def __call__(self, caption: str) -> int:
        return self._count(caption)

    @classmethod
    def approximate(cls) -> TokenCounter:
        return cls(
            lambda text: len(_APPROX_TOKEN.findall(text.lower())),
            "approximate (words and punctuation; no tokenizer found)",
            False,
        )

    @classmethod
    def from_tokenizer(cls, tokenizer, describe: str) -> TokenCounter:
        def count(text: str) -> int:
            ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
            return len(ids)

        return cls(count, describe, True)

    @classmethod
    def for_model(cls, model_path: str | os.PathLike | None) -> TokenCounter:
        """The tokenizer of a diffusers model folder (`tokenizer/`), else the approximation.

        Single-file checkpoints carry no tokenizer, and loading one from the hub is not an option
        offline, so those get the approximation.
        """
        if model_path:
            folder = Path(model_path) / "tokenizer"
            if (folder / "vocab.json").is_file():
                try:
                    import logging

                    from transformers import CLIPTokenizer

                    # Counting a long caption is the point; silence "sequence longer than 77" warnings.
                    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
                    tok = CLIPTokenizer.from_pretrained(str(folder))
                except Exception:
                    return cls.approximate()
                return cls.from_tokenizer(tok, f"tokenizer of {Path(model_path).name}")
        return cls.approximate()
