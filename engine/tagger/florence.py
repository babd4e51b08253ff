"""Florence-2 captions through transformers' own classes (Florence2ForConditionalGeneration, AutoProcessor).

The model is a local folder in transformers' Florence-2 format (config.json with model_type
"florence2", weights, processor and tokenizer files), e.g. florence-community/Florence-2-base or
-large downloaded once on a machine with internet. Nothing is fetched at run time
(`local_files_only=True`). The original microsoft/Florence-2-* repositories ship remote code
(`auto_map` in config.json) that transformers' native classes do not read: those folders are refused
with a hint.

Tasks: `<CAPTION>`, `<DETAILED_CAPTION>`, `<MORE_DETAILED_CAPTION>` (one sentence .. a paragraph);
pure-text tasks, so the answer is the decoded text without special tokens (what the processor's
`post_process_generation` returns for them). Generation: beam search with 3 beams, as in the
Florence-2 model card. On CUDA the weights load in bf16 (fp16 where the GPU lacks bf16), on the CPU
in fp32. `close()` frees the model (and CUDA's cache) so training starts with the memory back.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.errors import LoratuiError

TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
GET_MODEL = (
    "download a Florence-2 model once on a machine with internet, in transformers' format, e.g. "
    "`huggingface-cli download florence-community/Florence-2-base --local-dir DIR` (or Florence-2-large), "
    "copy DIR here and pass it (--model DIR, or [caption_auto] model); nothing is downloaded at run time"
)


def resolve_florence_dir(path: str | Path) -> Path:
    """The model folder, checked: exists, config.json of model_type "florence2", native format, weights.

    Raises:
        LoratuiError: naming the folder, with where to get the model.
    """
    folder = Path(path).expanduser()
    if not str(path).strip():
        raise LoratuiError("no Florence-2 model folder given", hint=GET_MODEL, where="model")
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise LoratuiError(f"the Florence-2 model folder {folder} {what}", hint=GET_MODEL, where=str(folder))
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LoratuiError(
            f"{folder} is not a Florence-2 model folder (no readable config.json)",
            hint=GET_MODEL,
            where=str(folder),
        ) from None
    if config.get("model_type") != "florence2":
        raise LoratuiError(
            f"{folder} holds a {config.get('model_type') or 'unknown'!r} model, not Florence-2",
            hint=GET_MODEL,
            where=str(config_path),
        )
    if "auto_map" in config:
        raise LoratuiError(
            f"{folder} is the original remote-code Florence-2 format, which transformers' own classes do not read",
            hint="use the converted checkpoints: " + GET_MODEL,
            where=str(config_path),
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise LoratuiError(
            f"{folder} has no model weights (*.safetensors)", hint=GET_MODEL, where=str(folder)
        )
    return folder


class Florence2Captioner:
    """Captions images with a local Florence-2 model.

    Args:
        folder: the model folder (see resolve_florence_dir).
        task: one of TASKS.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        max_new_tokens: longest answer in tokens; default: the folder's generation_config value, else
            1024 (the model card's), never past the decoder's position embeddings.
    """

    name = "florence2"

    def __init__(
        self,
        folder: str | Path,
        task: str = "<CAPTION>",
        device: str = "auto",
        max_new_tokens: int | None = None,
    ):
        if task not in TASKS:
            raise LoratuiError(
                f"unknown Florence-2 task {task!r}", hint="one of " + ", ".join(TASKS), where="task"
            )
        import torch
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        self.folder = resolve_florence_dir(folder)
        self.task = task
        use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise LoratuiError("--device cuda but no CUDA device is visible", hint="use --device auto or cpu")
        self.torch_device = torch.device("cuda" if use_cuda else "cpu")
        if use_cuda:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
            self.model = Florence2ForConditionalGeneration.from_pretrained(
                self.folder, dtype=self.dtype, local_files_only=True
            ).to(self.torch_device)
        except (OSError, ValueError, KeyError) as exc:
            raise LoratuiError(
                f"cannot load the Florence-2 model in {self.folder}: {exc}",
                hint=GET_MODEL,
                where=str(self.folder),
            ) from exc
        self.model.eval()
        text_cfg = self.model.config.text_config
        wanted = max_new_tokens or getattr(self.model.generation_config, "max_new_tokens", None) or 1024
        self.max_new_tokens = max(1, min(int(wanted), int(text_cfg.max_position_embeddings) - 2))
        self.device = f"{self.torch_device.type} ({str(self.dtype).removeprefix('torch.')})"

    def caption(self, images: list) -> list[str]:
        """Captions of PIL RGB images, in order."""
        import torch

        inputs = self.processor(text=[self.task] * len(images), images=images, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(
                input_ids=inputs["input_ids"].to(self.torch_device),
                pixel_values=inputs["pixel_values"].to(self.torch_device, self.dtype),
                max_new_tokens=self.max_new_tokens,
                num_beams=3,
                do_sample=False,
            )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def texts(
        self, paths: Sequence[Path], batch_size: int = 8
    ) -> Iterator[tuple[Path, str | None, LoratuiError | None]]:
        """(path, caption or None, error or None) per image, in order; unreadable images are errors."""
        from engine.data.images import open_image

        for start in range(0, len(paths), max(1, batch_size)):
            chunk = list(paths[start : start + max(1, batch_size)])
            loaded, errors = [], {}
            for p in chunk:
                try:
                    loaded.append((p, open_image(p)))
                except LoratuiError as exc:
                    errors[p] = exc
            captions = (
                dict(zip([p for p, _ in loaded], self.caption([im for _, im in loaded]))) if loaded else {}
            )
            for p in chunk:
                yield p, captions.get(p), errors.get(p)

    def close(self) -> None:
        """Free the model's memory (before training starts)."""
        import torch

        self.model = None
        self.processor = None
        gc.collect()
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
