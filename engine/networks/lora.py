"""peft adapters (LoRA/LoCon, DoRA, LoHa, LoKr) on a `BaseModel`, with kohya-named export and import.

`attach_lora` injects peft layers (adapter "default") into the UNet and, optionally, the text
encoders. `LoraNetwork` knows, for every adapted module, its kohya key (what ComfyUI, A1111 and
diffusers load) and its diffusers/peft key, so export never goes through diffusers'
`convert_state_dict_to_kohya` (it writes alpha = rank and names diffusers itself refuses).

Key rules (docs/formats.md): SD1.5/SD2 UNet = `lora_unet_` + diffusers path; SDXL UNet = `lora_unet_` +
LDM path; text encoders `lora_te_` (one encoder) or `lora_te1_`/`lora_te2_`, always with the
`text_model_` level. The tensors each module writes depend on the network type (engine.networks.lycoris):
LoRA/LoCon `.lora_down.weight`, `.lora_up.weight`, `.alpha` (+ `.dora_scale`), LoHa `.hada_*`, LoKr
`.lokr_*`. 3x3 convs (locon/loha/lokr) get conv_rank/conv_alpha through peft's rank/alpha patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from engine.errors import LoratuiError
from engine.models.ldm_names import LdmNameMap, kohya_flat
from engine.networks import fullweights, lycoris
from engine.networks.blocks import BASE, BlockMap
from engine.networks.targets import (
    blocks_of,
    check_supported,
    is_conv_kxk,
    network_type,
    targets_of,
    text_encoder_targets,
    unet_targets,
)

ADAPTER = "default"
_PEFT_KIND = {"lora": "lora", "locon": "lora", "loha": "loha", "lokr": "lokr"}


@dataclass
class AdaptedModule:
    """One adapted module: where it lives and how it is named in files."""

    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    name: str  # module path inside its component
    module: torch.nn.Module  # the peft layer (LoraLayer / LoHaLayer / LoKrLayer)
    kohya_key: str  # e.g. lora_unet_down_blocks_0_..._to_q
    diffusers_key: str  # e.g. unet.down_blocks.0....to_q
    aliases: tuple[str, ...] = ()  # other kohya spellings accepted on import
    kind: str = "lora"  # peft adapter kind: "lora" (also LoCon / DoRA) | "loha" | "lokr"
    adapter: str = ADAPTER  # peft adapter name: a layer can hold several (difference mode's copier)

    @property
    def down(self) -> torch.nn.Module:
        return self.module.lora_A[self.adapter]

    @property
    def up(self) -> torch.nn.Module:
        return self.module.lora_B[self.adapter]

    @property
    def rank(self) -> int:
        return int(self.module.r[self.adapter])

    @property
    def scaling(self) -> float:
        return float(self.module.scaling[self.adapter])

    def tensors(self) -> dict[str, torch.nn.Parameter]:
        """The trainable tensors by name (down/up/magnitude, hada_*, lokr_*)."""
        return lycoris.adapter_params(self.module, self.kind, self.adapter)

    def parameters(self):
        yield from self.tensors().values()


def _te_path(name: str) -> str:
    # transformers 5 CLIPTextModel has no `text_model.` level; kohya/ComfyUI/A1111 names need it.
    return name if name.startswith("text_model.") else "text_model." + name


def _conv_rank_alpha(net_cfg) -> tuple[int, float]:
    rank = int(getattr(net_cfg, "conv_rank", 0) or 0) or int(net_cfg.rank)
    alpha = float(getattr(net_cfg, "conv_alpha", 0) or 0) or float(net_cfg.alpha)
    return rank, alpha


def _peft_config(net_cfg, targets: list[str], conv_names: list[str]):
    """The peft config for this network type; 3x3 convs get conv_rank/conv_alpha via patterns."""
    kind = network_type(net_cfg)
    rank, alpha = int(net_cfg.rank), float(net_cfg.alpha)
    conv_rank, conv_alpha = _conv_rank_alpha(net_cfg)
    rank_pattern, alpha_pattern = {}, {}
    if conv_names and (conv_rank, conv_alpha) != (rank, alpha):
        # One alternation regex: peft fullmatches "(.*\.)?(<key>)$" against each module name.
        key = "|".join(re.escape(n) for n in conv_names)
        rank_pattern[key], alpha_pattern[key] = conv_rank, conv_alpha
    dropout = float(getattr(net_cfg, "dropout", 0.0) or 0.0)
    if kind in ("lora", "locon"):
        from peft import LoraConfig

        return LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            use_dora=bool(getattr(net_cfg, "dora", False)),
            init_lora_weights=True,  # kaiming-uniform down, zero up: same start as kohya
        )
    common = dict(
        r=rank,
        alpha=alpha,
        rank_dropout=dropout,  # LyCORIS-style dropout over the rank dimension, training only
        target_modules=targets,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_effective_conv2d=False,  # no Tucker form: ComfyUI can skip Tucker LoKr layers (docs/formats.md)
        init_weights=True,  # one factor zero: the adapter starts as a no-op
    )
    if kind == "loha":
        from peft import LoHaConfig

        return LoHaConfig(**common)
    from peft import LoKrConfig

    return LoKrConfig(**common)


def _inject(
    model: torch.nn.Module, targets: list[str], net_cfg, dtype: torch.dtype, adapter: str = ADAPTER
) -> None:
    from peft import inject_adapter_in_model

    lookup = dict(model.named_modules())
    # A module already adapted is a peft layer; its kernel size is its base layer's.
    conv_names = [n for n in targets if is_conv_kxk(_unwrapped(lookup[n]))]
    inject_adapter_in_model(_peft_config(net_cfg, targets, conv_names), model, adapter_name=adapter)


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    get_base = getattr(module, "get_base_layer", None)
    return get_base() if callable(get_base) else module


class LoraNetwork:
    """The trainable adapters (LoRA, LoCon, DoRA, LoHa or LoKr) attached to a base model."""

    def __init__(
        self, base, modules: list[AdaptedModule], net_cfg, train_text_encoder: bool, dtype, diffs=()
    ) -> None:
        self.base = base
        self.modules = modules
        # Trained differences of 1-D weights and biases (network.train_norm_bias, engine.networks.fullweights).
        self.diffs = list(diffs)
        self.net_cfg = net_cfg
        self.train_text_encoder = train_text_encoder
        self.dtype = dtype
        self.rank = int(net_cfg.rank)
        self.alpha = float(net_cfg.alpha)
        self.conv_rank, self.conv_alpha = _conv_rank_alpha(net_cfg)
        self.network_type = network_type(net_cfg)  # lora | locon | loha | lokr
        self.dora = bool(getattr(net_cfg, "dora", False))

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    @property
    def has_conv(self) -> bool:
        return self.network_type != "lora"

    def unet_modules(self) -> list[AdaptedModule]:
        return [m for m in self.modules if m.component == "unet"]

    def text_modules(self) -> list[AdaptedModule]:
        return [m for m in self.modules if m.component != "unet"]

    # ---- training -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()] + [d.diff for d in self.diffs]

    def param_groups(self, lr: float, text_encoder_lr: float | None = None) -> list[dict]:
        """Optimizer groups: UNet adapters at `lr`, text-encoder adapters at `text_encoder_lr` (0/None = lr)."""
        groups = []
        unet_params = [p for m in self.unet_modules() for p in m.parameters()]
        unet_params += [d.diff for d in self.diffs if d.component == "unet"]
        te_params = [p for m in self.text_modules() for p in m.parameters()]
        te_params += [d.diff for d in self.diffs if d.component != "unet"]
        if unet_params:
            groups.append({"params": unet_params, "lr": lr, "name": "unet"})
        if te_params:
            groups.append({"params": te_params, "lr": text_encoder_lr or lr, "name": "text_encoder"})
        return groups

    def train(self, mode: bool = True) -> None:
        """Dropout on/off in the adapters (the frozen base stays in eval mode)."""
        for m in self.modules:
            if m.kind == "lora":
                for d in m.module.lora_dropout.values():
                    d.train(mode)
            else:
                # LoHa/LoKr apply rank dropout when the layer itself is in training mode; setting the
                # flag without recursing keeps the wrapped base layer as it is.
                m.module.training = mode

    # ---- export -------------------------------------------------------------------------------
    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """kohya/LyCORIS-format tensors (detached, adapter dtype; alpha float32 0-dim)."""
        sd: dict[str, torch.Tensor] = {}
        for m in self.modules:
            for suffix, value in lycoris.export_module(
                m.module, m.kind, m.rank, m.scaling, m.adapter
            ).items():
                sd[f"{m.kohya_key}.{suffix}"] = value
        for d in self.diffs:
            sd[d.file_key] = d.diff.detach()
        return sd

    def save_format_problem(self, fmt: str) -> str | None:
        """Why this network cannot be written in `fmt` ("kohya" | "diffusers"), None when it can."""
        if fmt != "diffusers":
            return None
        if self.diffs or targets_of(self.net_cfg) == "all":
            return "diffusers cannot load networks on every weight or norm/bias differences"
        if self.network_type in ("loha", "lokr"):
            return f"diffusers cannot load {self.network_type} networks"
        if self.dora:
            return "DoRA networks are saved in the kohya format only (diffusers drops the DoRA magnitude)"
        return None

    def check_save_format(self, fmt: str) -> None:
        """Raise a LoratuiError (where="save.format") before training when `fmt` cannot hold this network."""
        problem = self.save_format_problem(fmt)
        if problem:
            raise LoratuiError(
                problem, hint='use save.format = "kohya" (ComfyUI and A1111 load it)', where="save.format"
            )

    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        """peft-style keys (`unet.<path>.lora_A.weight`) as diffusers' load_lora_weights reads them.

        The format has no per-module alpha (diffusers then assumes alpha = rank), so the scaling is
        baked into lora_B: the loaded model computes exactly what this network computes.
        """
        self.check_save_format("diffusers")
        sd: dict[str, torch.Tensor] = {}
        for m in self.modules:
            sd[f"{m.diffusers_key}.lora_A.weight"] = m.down.weight.detach()
            sd[f"{m.diffusers_key}.lora_B.weight"] = (m.up.weight.detach() * m.scaling).to(m.up.weight.dtype)
        return sd

    # ---- import -------------------------------------------------------------------------------
    def load_kohya_state_dict(
        self, sd: dict[str, torch.Tensor], *, where: str = "network.init_from", metadata: dict | None = None
    ) -> dict:
        """Load a kohya/LyCORIS- or diffusers-format state dict into these adapters.

        `metadata` (the file's header) tells how a `dora_scale` was written: loratui's files say so in
        `loratui_dora_scale` (for ComfyUI, engine.networks.lycoris.dora_scale_for); a file without it
        holds the magnitude itself (LyCORIS). Without metadata loratui's convention is assumed.

        The file's alpha/rank scale is kept exactly: the first factor is rescaled to this network's alpha.
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

        diff_loaded, diff_missing = fullweights.load_diffs(self.diffs, sd, where)
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in sd.items():
            if fullweights.is_diff_key(key):
                if not any(d.file_key == key for d in self.diffs):
                    groups.setdefault(key, {})["other"] = value
                continue
            for suffix, part in lycoris.SUFFIXES:
                if key.endswith(suffix):
                    groups.setdefault(key[: -len(suffix)], {})[part] = value
                    break
            else:
                for suffix, part in lycoris.DIFFUSERS_SUFFIXES:
                    if key.endswith(suffix):
                        groups.setdefault("diffusers:" + key[: -len(suffix)], {})[part] = value
                        break
                else:
                    groups.setdefault(key, {})["other"] = value

        dora_norm = "merged" if metadata is not None and "loratui_dora_scale" not in metadata else "base"
        loaded: set[int] = set()
        unexpected: list[str] = []
        for stem, parts in groups.items():
            m = by_key.get(stem)
            if m is None or lycoris.file_kind(parts) == "unknown":
                unexpected.append(stem.removeprefix("diffusers:"))
                continue
            unused = lycoris.import_module(
                m.module,
                m.kind,
                m.scaling,
                m.kohya_key,
                parts,
                from_diffusers=stem.startswith("diffusers:"),
                where=where,
                adapter=m.adapter,
                dora_norm=dora_norm,
            )
            unexpected += [f"{stem.removeprefix('diffusers:')}.{u}" for u in unused]
            loaded.add(id(m))
        if not loaded and not diff_loaded:
            raise LoratuiError(
                "the LoRA file holds no key of this network (wrong model family or not a LoRA file)",
                hint="use a LoRA trained on the same kind of base model (SD1.5 / SD2 / SDXL)",
                where=where,
            )
        missing = [m.kohya_key for m in self.modules if id(m) not in loaded] + diff_missing
        return {"loaded": len(loaded) + diff_loaded, "missing": missing, "unexpected": unexpected}


def _check_text_encoder_blocks(net_cfg, train_text_encoder: bool, chosen: set[str]) -> None:
    if not chosen:
        return
    if train_text_encoder and BASE not in chosen:
        raise LoratuiError(
            'network.train_text_encoder is true but network.blocks does not list "BASE" (the text encoder)',
            hint='add "BASE" to network.blocks, or set network.train_text_encoder = false',
            where="network.blocks",
        )
    if BASE in chosen and not train_text_encoder:
        raise LoratuiError(
            'network.blocks lists "BASE" (the text encoder) but network.train_text_encoder is false',
            hint='set network.train_text_encoder = true, or remove "BASE" from network.blocks',
            where="network.blocks",
        )


def attach_lora(
    base, net_cfg, *, train_text_encoder: bool, dtype: torch.dtype = torch.float32
) -> LoraNetwork:
    """Inject adapters of net_cfg.type (lora | locon | loha | lokr) into base.unet (and the text encoders).

    Targets follow kohya (engine.networks.targets), filtered by net_cfg.element and net_cfg.blocks.
    """
    check_supported(net_cfg)
    kind = _PEFT_KIND[network_type(net_cfg)]
    modules: list[AdaptedModule] = []

    unet = base.unet
    block_map = BlockMap(unet)
    chosen = block_map.parse(blocks_of(net_cfg))  # errors before anything is injected
    _check_text_encoder_blocks(net_cfg, train_text_encoder, chosen)
    names = unet_targets(unet, net_cfg, block_map)
    if not names and not (train_text_encoder and (not chosen or BASE in chosen)):
        raise LoratuiError(
            "network.element / network.blocks select no layer of this model",
            hint="valid block ids: " + ", ".join(block_map.valid) + "; or use network.blocks = []",
            where="network.blocks",
        )
    norm_bias = bool(getattr(net_cfg, "train_norm_bias", False))
    # Read before injection: peft wraps the adapted modules (and freezes every non-adapter parameter).
    found = {"unet": fullweights.norm_bias_params(unet) if norm_bias else []}
    if norm_bias and train_text_encoder:
        for i, enc in enumerate(base.text_encoders):
            found["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = fullweights.norm_bias_params(enc)
    if names:
        _inject(unet, names, net_cfg, dtype)
    ldm = LdmNameMap(unet) if base.family == "sdxl" else None

    def unet_key(name: str) -> tuple[str, tuple[str, ...]]:
        diffusers_flat = "lora_unet_" + kohya_flat(name)
        if ldm is not None:
            return "lora_unet_" + kohya_flat(ldm.to_ldm(name)), (diffusers_flat,)
        return diffusers_flat, ()

    lookup = dict(unet.named_modules())
    for name in names:
        key, aliases = unet_key(name)
        modules.append(AdaptedModule("unet", name, lookup[name], key, "unet." + name, aliases, kind))

    if train_text_encoder:
        encoders = base.text_encoders
        for i, enc in enumerate(encoders):
            component = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            prefix = "lora_te_" if len(encoders) == 1 else f"lora_te{i + 1}_"
            names = text_encoder_targets(enc, net_cfg)
            fullweights.check_embedding_targets(enc, names, net_cfg)
            _inject(enc, names, net_cfg, dtype)
            lookup = dict(enc.named_modules())
            for name in names:
                key = fullweights.text_key(base.family, i, len(encoders), name)
                aliases = []
                if len(encoders) == 1:  # diffusers' converter writes lora_te1_ even for SD1.5
                    aliases.append("lora_te1_" + kohya_flat(_te_path(name)))
                aliases.append(prefix + kohya_flat(name))  # without text_model_
                modules.append(
                    AdaptedModule(
                        # canonical `text_encoder.text_model.encoder...` (transformers 4 naming), which
                        # ComfyUI maps and diffusers loads under transformers 4 and 5 alike
                        component,
                        name,
                        lookup[name],
                        key,
                        f"{component}.{_te_path(name)}",
                        tuple(aliases),
                        kind,
                    )
                )

    for m in modules:
        # peft may create adapters in the base weight's dtype; the adapters train in `dtype`.
        for p in m.parameters():
            p.data = p.data.to(dtype)
            p.requires_grad_(True)
    diffs = fullweights.attach_found(found, base, lambda n: unet_key(n)[0], dtype)
    return LoraNetwork(base, modules, net_cfg, train_text_encoder, dtype, diffs)
