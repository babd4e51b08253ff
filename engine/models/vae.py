"""Load a separate VAE (model.vae): a diffusers VAE folder, a pipeline folder with vae/, or a single file
in diffusers or original (LDM) layout. The architecture config is the base model's VAE config."""

from __future__ import annotations

from pathlib import Path

from engine.errors import LoratuiError


def _bad(path: Path, why: str) -> LoratuiError:
    return LoratuiError(
        f"model.vae: {path} {why}",
        hint="point model.vae at a VAE .safetensors file or a diffusers VAE folder (config.json), or leave it empty",
        where="model.vae",
    )


def load_vae(path: Path, base_config):
    from diffusers import AutoencoderKL

    if not path.exists():
        raise _bad(path, "does not exist")
    if path.is_dir():
        sub = path / "vae" if (path / "model_index.json").is_file() else path
        if not (sub / "config.json").is_file():
            raise _bad(path, "is a folder without config.json")
        try:
            return AutoencoderKL.from_pretrained(sub, local_files_only=True)
        except Exception as exc:
            raise _bad(path, f"could not be loaded: {exc}") from exc

    from engine.models.single_file import read_checkpoint

    sd, _meta = read_checkpoint(path, where="model.vae")
    if any(k.startswith("first_stage_model.") for k in sd):
        sd = {k[len("first_stage_model.") :]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    elif any(k.startswith("vae.") for k in sd):
        sd = {k[len("vae.") :]: v for k, v in sd.items() if k.startswith("vae.")}
    vae = AutoencoderKL.from_config(base_config)
    if any(k.startswith("encoder.down.") for k in sd):  # LDM layout
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        sd = convert_ldm_vae_checkpoint(sd, dict(base_config))
    sd = {k: v for k, v in sd.items() if k in vae.state_dict()}
    missing, _ = vae.load_state_dict(sd, strict=False)
    if not sd or missing:
        raise _bad(path, f"does not match the base model's VAE ({len(missing)} weights missing)")
    return vae
