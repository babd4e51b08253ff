"""`BaseModel`: the frozen SD1.5 / SD2 / SDXL parts a LoRA trains against, with the few calls training needs.

It hides the family differences the training loop would otherwise repeat: one or two text encoders,
clip skip, SDXL's pooled embedding and size conditioning (`time_ids`), the VAE scaling factor and the
VAE dtype (the SDXL VAE overflows in fp16 and stays fp32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextEmbeds:
    """Text-encoder output for one batch of captions.

    hidden_states: [B, 77, C] (SDXL: both encoders' penultimate layers concatenated);
    pooled: [B, P] projected pooled output of the second SDXL encoder, None for SD1.5/SD2.
    """

    hidden_states: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, *args, **kwargs) -> TextEmbeds:
        pooled = self.pooled.to(*args, **kwargs) if self.pooled is not None else None
        return TextEmbeds(self.hidden_states.to(*args, **kwargs), pooled)

    def detach(self) -> TextEmbeds:
        pooled = self.pooled.detach() if self.pooled is not None else None
        return TextEmbeds(self.hidden_states.detach(), pooled)


def _inner_text_model(encoder):
    # transformers 5 flattened CLIPTextModel (no `.text_model`); CLIPTextModelWithProjection keeps it.
    return getattr(encoder, "text_model", encoder)


@dataclass
class BaseModel:
    """A loaded base model. All weights are frozen (requires_grad False) and in eval mode."""

    family: str  # "sd15" | "sd2" | "sdxl"
    prediction: str  # "epsilon" | "v_prediction"
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list
    tokenizers: list
    noise_scheduler: object
    vae_scaling_factor: float
    identity: str
    device: torch.device
    dtype: torch.dtype
    source: str = ""  # the resolved model.base path, for messages and metadata
    vae_source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    # ---- images -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(
        self, pixels: torch.Tensor, *, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Pixels [B,3,H,W] in -1..1 -> latents [B,4,H/8,W/8] scaled by `vae_scaling_factor`, float32.

        sample=True draws from the latent distribution (what kohya caches); False takes its mean.
        """
        pixels = pixels.to(device=self.device, dtype=self.vae_dtype)
        dist = self.vae.encode(pixels).latent_dist
        latents = dist.sample(generator=generator) if sample else dist.mode()
        return latents.float() * self.vae_scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels in -1..1 (float32), for samples."""
        latents = latents.to(device=self.device, dtype=self.vae_dtype) / self.vae_scaling_factor
        return self.vae.decode(latents).sample.float()

    # ---- text ---------------------------------------------------------------------------------
    def tokenize(self, captions: list[str]) -> list[torch.Tensor]:
        """Token ids [B, 77] for each tokenizer (padded to max length, truncated)."""
        out = []
        for tok in self.tokenizers:
            ids = tok(
                list(captions),
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out.append(ids.to(self.device))
        return out

    def encode_text(self, captions: list[str], clip_skip: int = 1) -> TextEmbeds:
        """Captions -> TextEmbeds. Gradients flow when the text encoders have trainable adapters.

        SD1.5/SD2: clip_skip 1 = last layer, 2 = penultimate (then the final layer norm, like kohya
        and A1111). SDXL: always both encoders' penultimate layers, like kohya and diffusers (its
        clip_skip is ignored); pooled = projected output of the second encoder.
        """
        ids = self.tokenize(captions)
        # Trained text encoders of a data-parallel run are called through DDP (engine.train.distributed).
        callers = self.extra.get("text_encoders_ddp", self.text_encoders)
        if self.family != "sdxl":
            enc = self.text_encoders[0]
            out = callers[0](ids[0], output_hidden_states=True)
            if clip_skip <= 1:
                hidden = out.last_hidden_state
            else:
                hidden = out.hidden_states[-clip_skip]
                hidden = _inner_text_model(enc).final_layer_norm(hidden)
            return TextEmbeds(hidden)
        hiddens = []
        pooled = None
        for enc, tok_ids in zip(callers, ids):
            out = enc(tok_ids, output_hidden_states=True)
            hiddens.append(out.hidden_states[-2])
            if hasattr(out, "text_embeds"):
                pooled = out.text_embeds
        return TextEmbeds(torch.cat(hiddens, dim=-1), pooled)

    # ---- unet ---------------------------------------------------------------------------------
    def sdxl_time_ids(
        self,
        original_size: tuple[int, int],
        crop_top_left: tuple[int, int],
        target_size: tuple[int, int],
    ) -> torch.Tensor:
        """SDXL size conditioning [1, 6]: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)."""
        values = [*original_size, *crop_top_left, *target_size]
        return torch.tensor([values], dtype=torch.float32, device=self.device)

    def unet_forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextEmbeds,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction (noise or v) for `noisy_latents` at `timesteps`."""
        dtype = self.dtype
        kwargs = {}
        if self.family == "sdxl":
            if text.pooled is None or time_ids is None:
                raise ValueError("SDXL needs pooled text embeddings and time_ids")
            batch = noisy_latents.shape[0]
            if time_ids.shape[0] != batch:
                time_ids = time_ids.expand(batch, -1)
            kwargs["added_cond_kwargs"] = {
                "text_embeds": text.pooled.to(self.device, dtype),
                "time_ids": time_ids.to(self.device, dtype),
            }
        # A data-parallel run calls the UNet through DistributedDataParallel (engine.train.distributed).
        unet = self.extra.get("unet_ddp", self.unet)
        return unet(
            noisy_latents.to(self.device, dtype),
            timesteps.to(self.device),
            encoder_hidden_states=text.hidden_states.to(self.device, dtype),
            **kwargs,
        ).sample

    def enable_gradient_checkpointing(self, text_encoders: bool = True) -> None:
        """Recompute activations in backward (less memory, ~20-30% slower)."""
        self.unet.enable_gradient_checkpointing()
        if text_encoders:
            for enc in self.text_encoders:
                if hasattr(enc, "gradient_checkpointing_enable"):
                    enc.gradient_checkpointing_enable()
