"""From tagger probabilities to caption text.

Order of a caption: the trigger word, the rating (only when asked for), character tags, then general
tags; within a category, tags keep the order of selected_tags.csv (like sd-scripts, not sorted by
score). A tag is kept when its probability is >= its category's threshold; the rating is the most
probable of the rating rows. Text: underscores become spaces except in emoticons such as `^_^`
(the list of SmilingWolf's tagger Space), and `(`/`)` are escaped as `\\(`/`\\)` so that a caption
pasted into an A1111/ComfyUI prompt means the literal tag, not a weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.data.captions import tag_key  # one rule for comparing tags: the tokenizer's view
from engine.tagger.labels import CATEGORY_CHARACTER, CATEGORY_GENERAL, CATEGORY_RATING, Labels

# Emoticon-like tags whose underscore is part of the face (SmilingWolf's wd-tagger Space).
KAOMOJIS = frozenset(
    [
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    ]
)

SEPARATOR = ", "


@dataclass(frozen=True)
class TagOptions:
    """How probabilities become a caption ([caption_auto] and `engine caption` flags)."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    undesired_tags: tuple[str, ...] = ()
    trigger_word: str = ""
    with_rating: bool = False
    escape: bool = True
    replace_underscores: bool = True
    character_first: bool = True
    _undesired_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_undesired_keys", frozenset(tag_key(t) for t in self.undesired_tags if t.strip())
        )

    def is_undesired(self, name: str) -> bool:
        return tag_key(name) in self._undesired_keys


def tag_text(name: str, replace_underscores: bool = True, escape: bool = True) -> str:
    """Caption text for one CSV tag name."""
    text = name
    if replace_underscores and name not in KAOMOJIS:
        text = text.replace("_", " ")
    if escape:
        text = text.replace("(", "\\(").replace(")", "\\)")
    return text


def parse_tag_list(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Undesired tags from a comma-separated string or a list, stripped, empties dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(t.strip() for t in items if t and t.strip())


@dataclass(frozen=True)
class ScoredTag:
    """One tag that made it into a caption (for previews)."""

    name: str
    text: str
    category: int
    score: float


def select_tags(probs: np.ndarray, labels: Labels, options: TagOptions) -> list[ScoredTag]:
    """The tags of one image, in caption order, without the trigger word."""
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    rating: list[ScoredTag] = []
    characters: list[ScoredTag] = []
    general: list[ScoredTag] = []
    best_rating = -1
    for i, (name, category) in enumerate(zip(labels.names, labels.categories)):
        p = float(probs[i])
        if category == CATEGORY_RATING:
            if best_rating < 0 or p > float(probs[best_rating]):
                best_rating = i
            continue
        if category == CATEGORY_GENERAL:
            if p < options.general_threshold:
                continue
            bucket = general
        elif category == CATEGORY_CHARACTER:
            if p < options.character_threshold:
                continue
            bucket = characters
        else:
            continue  # artist/copyright/meta rows exist in some files; never captioned
        if options.is_undesired(name):
            continue
        text = tag_text(name, options.replace_underscores, options.escape)
        bucket.append(ScoredTag(name, text, category, p))
    if options.with_rating and best_rating >= 0:
        name = labels.names[best_rating]
        if not options.is_undesired(name):
            text = tag_text(name, options.replace_underscores, options.escape)
            rating.append(ScoredTag(name, text, CATEGORY_RATING, float(probs[best_rating])))
    if options.character_first:
        return rating + characters + general
    return rating + general + characters


def caption_text(tags: list[ScoredTag], options: TagOptions) -> str:
    """The caption line: trigger word first, then the tags, duplicates dropped."""
    parts: list[str] = []
    seen: set[str] = set()
    trigger = options.trigger_word.strip()
    for text in ([trigger] if trigger else []) + [t.text for t in tags]:
        key = tag_key(text)
        if key in seen:
            continue
        seen.add(key)
        parts.append(text)
    return SEPARATOR.join(parts)
