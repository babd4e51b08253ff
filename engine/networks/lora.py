"""peft LoRA adapters on a `BaseModel`, with kohya-named export and import.

`attach_lora` injects peft LoRA layers (adapter "default") into the UNet and, optionally, the text
encoders. `LoraNetwork` knows, for every adapted module, its kohya key (what ComfyUI, A1111 and
diffusers load) and its diffusers/peft key, so export never goes through diffusers'
`convert_state_dict_to_kohya` (it writes alpha = rank and names diffusers itself refuses).

Key rules (formats.md §0): SD1.5/SD2 UNet = `lora_unet_` + diffusers path; SDXL UNet = `lora_unet_` +
LDM path; text encoders `lora_te_` (one encoder) or `lora_te1_`/`lora_te2_`, always with the
`text_model_` level. Each module writes `.lora_down.weight` (lora_A), `.lora_up.weight` (lora_B) and
`.alpha` = scaling x rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import LoratuiError
from engine.models.ldm_names import LdmNameMap, kohya_flat
from engine.networks.targets import check_supported, text_encoder_targets, unet_targets

ADAPTER = "default"


@dataclass
class AdaptedModule:
    """One LoRA-adapted module: where it lives and how it is named in files."""

    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    name: str  # module path inside its component
    module: torch.nn.Module  # the peft LoraLayer
    kohya_key: str  # e.g. lora_unet_down_blocks_0_..._to_q
    diffusers_key: str  # e.g. unet.down_blocks.0....to_q
    aliases: tuple[str, ...] = ()  # other kohya spellings accepted on import

    @property
    def down(self) -> torch.nn.Module:
        return self.module.lora_A[ADAPTER]

    @property
    def up(self) -> torch.nn.Module:
        return self.module.lora_B[ADAPTER]

    @property
    def rank(self) -> int:
        return int(self.module.r[ADAPTER])

    @property
    def scaling(self) -> float:
        return float(self.module.scaling[ADAPTER])

    def parameters(self):
        yield from self.down.parameters()
        yield from self.up.parameters()


def _te_path(name: str) -> str:
    # transformers 5 CLIPTextModel has no `text_model.` level; kohya/ComfyUI/A1111 names need it.
    return name if name.startswith("text_model.") else "text_model." + name


def _inject(model: torch.nn.Module, targets: list[str], net_cfg, dtype: torch.dtype) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=int(net_cfg.rank),
        lora_alpha=float(net_cfg.alpha),
        lora_dropout=float(getattr(net_cfg, "dropout", 0.0) or 0.0),
        target_modules=targets,
        init_lora_weights=True,  # kaiming-uniform down, zero up: same start as kohya
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)


class LoraNetwork:
    """The trainable LoRA adapters attached to a base model."""

    def __init__(self, base, modules: list[AdaptedModule], net_cfg, train_text_encoder: bool, dtype) -> None:
        self.base = base
        self.modules = modules
        self.net_cfg = net_cfg
        self.train_text_encoder = train_text_encoder
        self.dtype = dtype
        self.rank = int(net_cfg.rank)
        self.alpha = float(net_cfg.alpha)
        self.network_type = "lora"

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    def unet_modules(self) -> list[AdaptedModule]:
        return [m for m in self.modules if m.component == "unet"]

    def text_modules(self) -> list[AdaptedModule]:
        return [m for m in self.modules if m.component != "unet"]

    # ---- training -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]

    def param_groups(self, lr: float, text_encoder_lr: float | None = None) -> list[dict]:
        """Optimizer groups: UNet adapters at `lr`, text-encoder adapters at `text_encoder_lr` (0/None = lr)."""
        groups = []
        unet_params = [p for m in self.unet_modules() for p in m.parameters()]
        te_params = [p for m in self.text_modules() for p in m.parameters()]
        if unet_params:
            groups.append({"params": unet_params, "lr": lr, "name": "unet"})
        if te_params:
            groups.append({"params": te_params, "lr": text_encoder_lr or lr, "name": "text_encoder"})
        return groups

    def train(self, mode: bool = True) -> None:
        """Dropout on/off in the adapters (the frozen base stays in eval mode)."""
        for m in self.modules:
            for d in m.module.lora_dropout.values():
                d.train(mode)

    # ---- export -------------------------------------------------------------------------------
    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """kohya-format tensors (detached, adapter dtype; alpha float32 0-dim)."""
        sd: dict[str, torch.Tensor] = {}
        for m in self.modules:
            sd[f"{m.kohya_key}.lora_down.weight"] = m.down.weight.detach()
            sd[f"{m.kohya_key}.lora_up.weight"] = m.up.weight.detach()
            sd[f"{m.kohya_key}.alpha"] = torch.tensor(m.scaling * m.rank, dtype=torch.float32)
        return sd

    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        """peft-style keys (`unet.<path>.lora_A.weight`) as diffusers' load_lora_weights reads them.

        The format has no per-module alpha (diffusers then assumes alpha = rank), so the scaling is
        baked into lora_B: the loaded model computes exactly what this network computes.
        """
        sd: dict[str, torch.Tensor] = {}
        for m in self.modules:
            sd[f"{m.diffusers_key}.lora_A.weight"] = m.down.weight.detach()
            sd[f"{m.diffusers_key}.lora_B.weight"] = (m.up.weight.detach() * m.scaling).to(m.up.weight.dtype)
        return sd

    # ---- import -------------------------------------------------------------------------------
    def load_kohya_state_dict(self, sd: dict[str, torch.Tensor], *, where: str = "network.init_from") -> dict:
        """Load a kohya- or diffusers-format LoRA state dict into these adapters.

        The file's alpha/rank scale is kept exactly: lora_up is rescaled to this network's alpha.
        Returns {"loaded": n, "missing": [kohya keys not in the file], "unexpected": [file keys unused]}.
        """
        by_key: dict[str, AdaptedModule] = {}
        for m in self.modules:
            for k in (m.kohya_key, *m.aliases):
                by_key[k] = m
            by_key["diffusers:" + m.diffusers_key] = m
            if m.component != "unet":
                comp, _, rest = m.diffusers_key.partition(".")
                alt = rest[len("text_model.") :] if rest.startswith("text_model.") else "text_model." + rest
                by_key[f"diffusers:{comp}.{alt}"] = m

        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in sd.items():
            for suffix, part in (
                (".lora_down.weight", "down"),
                (".lora_up.weight", "up"),
                (".alpha", "alpha"),
                (".lora_A.weight", "down"),
                (".lora_B.weight", "up"),
            ):
                if key.endswith(suffix):
                    stem = key[: -len(suffix)]
                    if suffix.startswith(".lora_A") or suffix.startswith(".lora_B"):
                        stem = "diffusers:" + stem
                    groups.setdefault(stem, {})[part] = value
                    break
            else:
                groups.setdefault(key, {})["other"] = value

        loaded: set[int] = set()
        unexpected: list[str] = []
        for stem, parts in groups.items():
            m = by_key.get(stem)
            if m is None or "down" not in parts or "up" not in parts:
                unexpected.append(stem.removeprefix("diffusers:"))
                continue
            down, up = parts["down"], parts["up"]
            if tuple(down.shape) != tuple(m.down.weight.shape) or tuple(up.shape) != tuple(m.up.weight.shape):
                raise LoratuiError(
                    f"LoRA file does not fit this network at {m.kohya_key}: "
                    f"file rank {down.shape[0]}, network rank {m.rank}",
                    hint="set network.rank (and the base model) to what the file was trained with",
                    where=where,
                )
            rank = down.shape[0]
            if stem.startswith("diffusers:"):
                file_scale = 1.0  # diffusers format: alpha = rank (our writer bakes the scale into lora_B)
            else:
                alpha = parts.get("alpha")
                file_scale = (float(alpha) / rank) if alpha is not None else 1.0
            with torch.no_grad():
                m.down.weight.copy_(down.to(m.down.weight.dtype))
                m.up.weight.copy_((up.float() * (file_scale / m.scaling)).to(m.up.weight.dtype))
            loaded.add(id(m))
        if not loaded:
            raise LoratuiError(
                "the LoRA file holds no key of this network (wrong model family or not a LoRA file)",
                hint="use a LoRA trained on the same kind of base model (SD1.5 / SD2 / SDXL)",
                where=where,
            )
        missing = [m.kohya_key for m in self.modules if id(m) not in loaded]
        return {"loaded": len(loaded), "missing": missing, "unexpected": unexpected}


def attach_lora(
    base, net_cfg, *, train_text_encoder: bool, dtype: torch.dtype = torch.float32
) -> LoraNetwork:
    """Inject LoRA adapters (kohya's default targets) into base.unet (and the text encoders)."""
    check_supported(net_cfg)
    modules: list[AdaptedModule] = []

    unet = base.unet
    names = unet_targets(unet, net_cfg)
    _inject(unet, names, net_cfg, dtype)
    ldm = LdmNameMap(unet) if base.family == "sdxl" else None
    lookup = dict(unet.named_modules())
    for name in names:
        diffusers_flat = "lora_unet_" + kohya_flat(name)
        if ldm is not None:
            key = "lora_unet_" + kohya_flat(ldm.to_ldm(name))
            aliases = (diffusers_flat,)
        else:
            key, aliases = diffusers_flat, ()
        modules.append(AdaptedModule("unet", name, lookup[name], key, "unet." + name, aliases))

    if train_text_encoder:
        encoders = base.text_encoders
        for i, enc in enumerate(encoders):
            component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            prefix = "lora_te_" if len(encoders) == 1 else f"lora_te{i + 1}_"
            names = text_encoder_targets(enc, net_cfg)
            _inject(enc, names, net_cfg, dtype)
            lookup = dict(enc.named_modules())
            for name in names:
                key = prefix + kohya_flat(_te_path(name))
                aliases = []
                if len(encoders) == 1:  # diffusers' converter writes lora_te1_ even for SD1.5
                    aliases.append("lora_te1_" + kohya_flat(_te_path(name)))
                aliases.append(prefix + kohya_flat(name))  # without text_model_
                modules.append(
                    AdaptedModule(component, name, lookup[name], key, f"{component}.{name}", tuple(aliases))
                )

    for m in modules:
        # peft may create adapters in the base weight's dtype; the adapters train in `dtype`.
        m.down.to(dtype=dtype)
        m.up.to(dtype=dtype)
        for p in m.parameters():
            p.requires_grad_(True)
    return LoraNetwork(base, modules, net_cfg, train_text_encoder, dtype)
