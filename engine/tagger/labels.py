"""Read a WD14 `selected_tags.csv`: one row per model output, with a tag name and a category.

The header is `tag_id,name,category,count`; only `name` and `category` are needed. Category 9 is a
rating, 0 a general tag, 4 a character; other categories (artist, copyright, meta) are never written.
Rows are kept in file order because the model's output columns follow that order.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LoratuiError
from engine.textfile import TextEncodingError, read_user_text

CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9

MODEL_HINT = (
    "download a WD14 tagger on a machine with internet, e.g. the Hugging Face repo "
    "SmilingWolf/wd-swinv2-tagger-v3 or SmilingWolf/wd-vit-tagger-v3 (files model.onnx and "
    "selected_tags.csv), and copy both files into one folder"
)

_REQUIRED_COLUMNS = ("name", "category")


@dataclass(frozen=True)
class Labels:
    """Tag names and categories in model output order."""

    names: tuple[str, ...]
    categories: tuple[int, ...]
    path: Path

    def __len__(self) -> int:
        return len(self.names)


def load_labels(path: str | Path) -> Labels:
    """Parse selected_tags.csv, raising LoratuiError with the file and row on any problem."""
    path = Path(path)
    if not path.is_file():
        raise LoratuiError(
            f"the tagger folder has no selected_tags.csv ({path.name} not found)",
            hint=MODEL_HINT,
            where=str(path),
        )
    try:
        text = read_user_text(path)
    except TextEncodingError as exc:
        raise LoratuiError(
            f"cannot read the tag list: {exc.message}", hint=exc.hint, where=str(path)
        ) from None
    except OSError as exc:
        raise LoratuiError(f"cannot read the tag list: {exc}", hint=MODEL_HINT, where=str(path)) from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise LoratuiError(
            f"selected_tags.csv lacks the column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'no header'})",
            hint="the file must start with the header tag_id,name,category,count; " + MODEL_HINT,
            where=str(path),
        )
    names: list[str] = []
    categories: list[int] = []
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        line = reader.line_num
        name = (row.get("name") or "").strip()
        raw_category = (row.get("category") or "").strip()
        if not name:
            raise LoratuiError(
                f"selected_tags.csv line {line} has an empty tag name",
                hint=MODEL_HINT,
                where=f"{path}:{line}",
            )
        try:
            category = int(raw_category)
        except ValueError:
            raise LoratuiError(
                f"selected_tags.csv line {line}: category {raw_category!r} is not a number",
                hint="categories are 9 (rating), 0 (general), 4 (character); " + MODEL_HINT,
                where=f"{path}:{line}",
            ) from None
        names.append(name)
        categories.append(category)
    if not names:
        raise LoratuiError("selected_tags.csv has no tag rows", hint=MODEL_HINT, where=str(path))
    return Labels(names=tuple(names), categories=tuple(categories), path=path)
