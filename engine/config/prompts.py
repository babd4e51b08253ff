"""Sample prompts with kohya's per-prompt options (torch-free: the config check uses it too).

A prompt is written as kohya sd-scripts users write them in a `--sample_prompts` file, one per line:

    a photo of shapes, red circle --n blurry, lowres --w 512 --h 768 --d 42 --l 6.5 --s 28

`--n` negative prompt, `--w` / `--h` size in pixels (rounded down to a multiple of 8, at least 64),
`--d` seed, `--l` guidance scale (CFG), `--s` denoising steps (1..1000). Options are split on " --"
as in kohya's `library/train_util.py` (`line_to_prompt_dict`); an option left out takes the [sample]
value (`steps`, `cfg`, seed = `sample.seed` + prompt index) or the training resolution. Unlike kohya,
an unknown or malformed option is an error naming the prompt and the option, not silently dropped.

Prompts come from `[sample] prompts` (each entry may carry options) followed by the lines of
`[sample] prompts_file` (blank lines and lines starting with `#` are skipped, as in kohya).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import LoratuiError
from engine.textfile import read_user_file

OPTIONS = {"n": "negative prompt", "w": "width", "h": "height", "d": "seed", "l": "guidance", "s": "steps"}


@dataclass(frozen=True)
class SamplePrompt:
    """One sample image to generate: its prompt and every setting, resolved."""

    prompt: str
    negative: str
    width: int
    height: int
    seed: int
    guidance: float
    steps: int


def parse_prompt_line(line: str, where: str = "") -> dict:
    """kohya's prompt line → {"prompt", and any of "negative", "width", "height", "seed", "guidance", "steps"}.

    Raises:
        LoratuiError: an unknown option or a value of the wrong type (`where` names the line).
    """
    parts = line.split(" --")
    out: dict = {"prompt": parts[0].strip()}
    for part in parts[1:]:
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition(" ")
        name, value = name.strip().lower(), value.strip()
        if name not in OPTIONS:
            raise LoratuiError(
                f"unknown sample prompt option --{name}",
                hint="kohya's options are " + ", ".join(f"--{k} ({v})" for k, v in OPTIONS.items()),
                where=where,
            )
        try:
            if name == "n":
                out["negative"] = value
            elif name in ("w", "h"):
                out["width" if name == "w" else "height"] = max(64, int(value) - int(value) % 8)
            elif name == "d":
                out["seed"] = int(value)
            elif name == "l":
                out["guidance"] = float(value)
            else:
                out["steps"] = max(1, min(1000, int(value)))
        except ValueError:
            raise LoratuiError(
                f"sample prompt option --{name} {value!r} is not a number",
                hint=f"--{name} takes the {OPTIONS[name]} as a number, e.g. --{name} "
                + ("7.5" if name == "l" else "512"),
                where=where,
            ) from None
    if not out["prompt"]:
        raise LoratuiError(
            "a sample prompt is empty before its options", hint="write the prompt first", where=where
        )
    return out


def prompt_lines(cfg) -> list[tuple[str, str]]:
    """(line, where) of every prompt: [sample] prompts, then the lines of [sample] prompts_file.

    Raises:
        LoratuiError: prompts_file is set but cannot be read.
    """
    lines = [(str(p), f"sample.prompts[{i}]") for i, p in enumerate(cfg.sample.prompts) if str(p).strip()]
    ref = str(getattr(cfg.sample, "prompts_file", "") or "")
    if ref:
        path = Path(cfg.resolve_path(ref))
        text = read_user_file(
            path,
            what="sample prompts file",
            where="sample.prompts_file",
            read_hint="sample.prompts_file is a UTF-8 text file with one prompt per line",
        )
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                lines.append((line, f"{path}:{n}"))
    return lines


def sample_prompts(cfg) -> list[SamplePrompt]:
    """Every sample of one round, options resolved against [sample] and the training resolution."""
    width, height = cfg.dataset.resolution_wh()
    out = []
    for i, (line, where) in enumerate(prompt_lines(cfg)):
        d = parse_prompt_line(line, where)
        out.append(
            SamplePrompt(
                prompt=d["prompt"],
                negative=d.get("negative", ""),
                width=d.get("width", width),
                height=d.get("height", height),
                seed=d.get("seed", int(cfg.sample.seed) + i),
                guidance=d.get("guidance", float(cfg.sample.cfg)),
                steps=d.get("steps", int(cfg.sample.steps)),
            )
        )
    return out
