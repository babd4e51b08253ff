"""The one reader of users' text files: captions, tag lists, config and preset TOML.

Accepted: UTF-8 with or without a byte-order mark, and UTF-16 / UTF-32 with a BOM (what Windows
Notepad saves as "Unicode": FF FE, then little-endian UTF-16). Anything else (cp932/Shift-JIS,
Latin-1/cp1252, UTF-16 without a BOM, binary) raises `TextEncodingError` naming the file and its
likely encoding (guessed with charset-normalizer), so `check` lists it as a problem and a training run
never trains mis-decoded bytes. Torch-free: `check` and the TUI use it.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from engine.errors import LoratuiError

# Longest first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class TextEncodingError(LoratuiError):
    """A user text file that is not UTF-8 / BOM-marked UTF-16; `encoding` is the likely one or ""."""

    def __init__(self, message: str, hint: str, where: str, encoding: str = "") -> None:
        super().__init__(message, hint=hint, where=where)
        self.encoding = encoding


def guess_encodings(raw: bytes, limit: int = 3) -> list[str]:
    """The likely encodings of `raw`, most likely first (e.g. ["cp949", "cp932", "gb18030"]).

    charset-normalizer's matches (https://github.com/jawah/charset_normalizer). A caption is short,
    and short Shift-JIS is also valid Korean or Chinese, so up to `limit` candidates are returned
    and the error words them as "looks like".
    """
    if b"\x00" in raw[:4096]:
        # BOM-less UTF-16: every other byte of ASCII text is NUL.
        even, odd = raw[0:4096:2].count(0), raw[1:4096:2].count(0)
        if odd != even:
            return ["utf_16_le" if odd > even else "utf_16_be"]
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a runtime dependency; the error still names the file
        return []
    found = [m.encoding for m in from_bytes(raw) if not m.encoding.startswith(("utf_16", "utf_32"))]
    return found[:limit]


def decode_user_text(raw: bytes, where: str = "") -> str:
    """Decode a user text file's bytes (see the module docstring); raises TextEncodingError."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as exc:
                raise TextEncodingError(
                    f"{where or 'text file'} starts with a {codec.upper()} byte-order mark but is not "
                    f"valid {codec.upper()} (byte {exc.start})",
                    hint="the file is damaged; save it again as UTF-8",
                    where=where,
                    encoding=codec,
                ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text
    guesses = guess_encodings(raw)
    guess = guesses[0] if guesses else ""
    named = ", ".join(guesses[:-1]) + " or " + guesses[-1] if len(guesses) > 1 else guess
    looks = f" (looks like {named})" if named else ""
    recode = f"iconv -f {guess.replace('_', '-')} -t utf-8" if guess else "your editor's Save As UTF-8"
    raise TextEncodingError(
        f"{where or 'text file'} is not UTF-8{looks}: it would be read as garbage",
        hint=f"save it as UTF-8 (e.g. {recode}); UTF-16 needs a byte-order mark",
        where=where,
        encoding=guess,
    )


def read_user_text(path: str | os.PathLike) -> str:
    """The text of a user's file (captions, tag lists, TOML). Raises TextEncodingError for another
    encoding and OSError when the file cannot be read."""
    p = Path(path)
    return decode_user_text(p.read_bytes(), where=str(p))


def read_user_file(
    path: str | os.PathLike,
    *,
    what: str,
    where: str | None = None,
    missing_hint: str = "relative paths start at the workspace",
    read_hint: str = "",
    error: type[LoratuiError] = LoratuiError,
) -> str:
    """The text of a user's file, every failure raised as `error` (a LoratuiError) that names `what`
    ("workflow", "prompts file"), the file and `where` (a config key; the file itself by default):
    not found (hint `missing_hint`), a folder, unreadable (hint `read_hint`), or not UTF-8 /
    BOM-marked UTF-16 (the likely encoding and how to convert it, from TextEncodingError)."""
    p = Path(path)
    at = where or str(p)
    try:
        return read_user_text(p)
    except TextEncodingError as exc:
        raise error(exc.message, hint=exc.hint, where=at) from None
    except FileNotFoundError:
        raise error(f"{what} not found: {p}", hint=missing_hint, where=at) from None
    except IsADirectoryError:
        raise error(
            f"{what} {p} is a folder, not a file", hint="give the path of the file", where=at
        ) from None
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise error(f"cannot read {what} {p}: {reason}", hint=read_hint, where=at) from None
