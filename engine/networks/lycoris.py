"""Per-module kohya/LyCORIS tensors for each adapter kind (LoRA/LoCon, DoRA, LoHa, LoKr), both ways.

Export follows what sd-scripts (`networks.lora`, `lycoris.kohya`) writes, so ComfyUI and A1111 load
the files (docs/formats.md):

* LoRA/LoCon: `lora_down.weight` (lora_A; a conv keeps its kernel), `lora_up.weight` (lora_B, 1x1 for
  convs), `alpha` = scaling x rank. DoRA adds `dora_scale` [out, 1(, 1, 1)], written for ComfyUI's
  `weight_decompose` (comfy/weight_adapter/base.py): with a dora_scale over the output axis it computes
  W' = (W + dW) * dora_scale / (||W|| + eps), the norm of the *base* weight per output row, while peft
  trained W' = m * (W + dW) / ||W + dW||. So dora_scale = m * (||W|| + eps) / ||W + dW|| (`dora_scale_for`),
  and ComfyUI applies exactly the trained weights. Readers that normalise by ||W + dW|| (LyCORIS, A1111)
  are off by ||W|| / ||W + dW|| per row: the file says so (`loratui_dora_scale` in its metadata).
* LoHa: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b` (same shapes in peft and LyCORIS) and
  `alpha` = scaling x rank; every loader computes (w1a@w1b) * (w2a@w2b) * alpha / rank.
* LoKr: `lokr_w1` | `lokr_w1_a`+`lokr_w1_b`, `lokr_w2` | `lokr_w2_a`+`lokr_w2_b`. peft always multiplies
  by alpha/r, LyCORIS and ComfyUI use scale 1 when both factors are full, so peft's scaling is baked
  into w1 (w1_a) and `alpha` is written equal to the decomposed factor's rank (scale 1 everywhere), or
  left out when both factors are full.

Import reverses this: the file's scale is kept exactly whatever this network's alpha is.
"""

from __future__ import annotations

import torch

from engine.errors import LoratuiError

ADAPTER = "default"

LOHA_PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")

# File suffix -> part name. Order matters only for overlapping suffixes (none overlap).
SUFFIXES = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".alpha", "alpha"),
    (".dora_scale", "dora_scale"),
    *((f".{p}", p) for p in LOHA_PARAMS + LOKR_PARAMS),
)
DIFFUSERS_SUFFIXES = ((".lora_A.weight", "down"), (".lora_B.weight", "up"))


def file_kind(parts: dict) -> str:
    """ "lora" / "loha" / "lokr" (or "unknown") for the tensors of one file module."""
    if "down" in parts or "up" in parts:
        return "lora"
    if any(p.startswith("hada_") for p in parts):
        return "loha"
    if any(p.startswith("lokr_") for p in parts):
        return "lokr"
    return "unknown"


def adapter_params(layer, kind: str, adapter: str = ADAPTER) -> dict[str, torch.nn.Parameter]:
    """The trainable tensors of one peft layer's `adapter`, by their LyCORIS/peft name."""
    if kind == "lora":
        embedding_a = getattr(layer, "lora_embedding_A", None)
        if embedding_a is not None and adapter in embedding_a:
            # peft's Embedding: A [r, num_embeddings], B [dim, r]; delta = (B @ A).T (export transposes).
            return {"down": embedding_a[adapter], "up": layer.lora_embedding_B[adapter]}
        out = {"down": layer.lora_A[adapter].weight, "up": layer.lora_B[adapter].weight}
        mags = getattr(layer, "lora_magnitude_vector", None)
        if mags is not None and adapter in mags:
            out["magnitude"] = mags[adapter].weight
        return out
    names = LOHA_PARAMS if kind == "loha" else LOKR_PARAMS
    return {n: getattr(layer, n)[adapter] for n in names if adapter in getattr(layer, n)}


def is_embedding(layer, adapter: str = ADAPTER) -> bool:
    """Whether `adapter` of this peft layer adapts an Embedding table."""
    table = getattr(layer, "lora_embedding_A", None)
    return table is not None and adapter in table


def _base_weight(layer) -> torch.Tensor:
    return layer.get_base_layer().weight


def _row_norms(layer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(||W|| + eps, ||W + dW||) per output row in float32, dW = peft's scaled B @ A of `adapter`."""
    weight = _base_weight(layer).detach().float()
    delta = layer.get_delta_weight(adapter).detach().float().reshape(weight.shape)
    rows = weight.shape[0]
    base = weight.reshape(rows, -1).norm(dim=1) + torch.finfo(torch.float32).eps
    merged = (weight + delta).reshape(rows, -1).norm(dim=1)
    return base, merged


def dora_scale_for(layer, magnitude: torch.Tensor, adapter: str = ADAPTER) -> torch.Tensor:
    """The `dora_scale` [out, 1(, 1, 1)] with which ComfyUI's weight_decompose reproduces peft's DoRA.

    m * (||W|| + eps) / ||W + dW|| per output row (see the module docstring; eps = float32's, which
    ComfyUI adds for a float32 model; an fp16 model adds 1e-3, a relative change below 1e-2 of a %).
    """
    base, merged = _row_norms(layer, adapter)
    weight = _base_weight(layer)
    scale = magnitude.detach().float().reshape(-1) * base / merged
    return scale.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))


def magnitude_from(layer, dora_scale: torch.Tensor, adapter: str = ADAPTER) -> torch.Tensor:
    """peft's magnitude from a dora_scale written by `dora_scale_for` (lora_A/B already loaded)."""
    base, merged = _row_norms(layer, adapter)
    return dora_scale.float().reshape(-1) * merged / base


# ---- export -----------------------------------------------------------------------------------------
def export_module(
    layer, kind: str, rank: int, scaling: float, adapter: str = ADAPTER
) -> dict[str, torch.Tensor]:
    """kohya/LyCORIS tensors (suffix -> tensor) of one adapted module's `adapter`."""
    p = {k: v.detach() for k, v in adapter_params(layer, kind, adapter).items()}
    alpha = torch.tensor(scaling * rank, dtype=torch.float32)
    if kind == "lora" and is_embedding(layer, adapter):
        # kohya: delta = up @ down in the weight's [num_embeddings, dim] shape, = A.T @ B.T in peft.
        return {"lora_down.weight": p["up"].T, "lora_up.weight": p["down"].T, "alpha": alpha}
    if kind == "lora":
        out = {"lora_down.weight": p["down"], "lora_up.weight": p["up"], "alpha": alpha}
        if "magnitude" in p:
            out["dora_scale"] = dora_scale_for(layer, p["magnitude"], adapter)
        return out
    if kind == "loha":
        if "hada_t1" in p:  # never created (use_effective_conv2d=False); guard against surprises
            raise LoratuiError("LoHa Tucker form cannot be exported", where="network.type")
        return {**{n: p[n] for n in LOHA_PARAMS[:4]}, "alpha": alpha}
    # lokr
    if "lokr_t2" in p:
        raise LoratuiError("LoKr Tucker form cannot be exported", where="network.type")
    out: dict[str, torch.Tensor] = {}
    dim = None
    if "lokr_w1" in p:
        out["lokr_w1"] = p["lokr_w1"] * scaling
    else:
        out["lokr_w1_a"] = p["lokr_w1_a"] * scaling
        out["lokr_w1_b"] = p["lokr_w1_b"]
        dim = p["lokr_w1_b"].shape[0]
    if "lokr_w2" in p:
        out["lokr_w2"] = p["lokr_w2"]
    else:
        out["lokr_w2_a"] = p["lokr_w2_a"]
        out["lokr_w2_b"] = p["lokr_w2_b"]
        dim = p["lokr_w2_b"].shape[0]
    if dim is not None:
        out["alpha"] = torch.tensor(float(dim), dtype=torch.float32)
    return out


# ---- import -----------------------------------------------------------------------------------------
def _mismatch(key: str, what: str, where: str) -> LoratuiError:
    return LoratuiError(
        f"LoRA file does not fit this network at {key}: {what}",
        hint="set network.type, network.rank / conv_rank (and the base model) to what the file was trained with",
        where=where,
    )


def _check_shape(key: str, name: str, file_t: torch.Tensor, param: torch.Tensor, where: str) -> None:
    if tuple(file_t.shape) != tuple(param.shape):
        raise _mismatch(key, f"{name} is {tuple(file_t.shape)} in the file, {tuple(param.shape)} here", where)


def import_module(
    layer,
    kind: str,
    scaling: float,
    key: str,
    parts: dict,
    *,
    from_diffusers: bool,
    where: str,
    adapter: str = ADAPTER,
    dora_norm: str = "base",
) -> list[str]:
    """Copy one file module into a peft layer, keeping the file's scale. Returns unused part names.

    `dora_norm`: how the file's dora_scale was meant: "base" (loratui, for ComfyUI: ||W|| per row) or
    "merged" (LyCORIS: ||W + dW||, dora_scale is the magnitude itself)."""
    fk = file_kind(parts)
    if fk != kind:
        raise _mismatch(key, f"the file holds a {fk} module, this network trains {kind}", where)
    params = adapter_params(layer, kind, adapter)
    unused: list[str] = []
    with torch.no_grad():
        if kind == "lora":
            if "mid" in parts:
                raise _mismatch(key, "Tucker LoCon (lora_mid) files cannot be imported", where)
            if "down" not in parts or "up" not in parts:
                raise _mismatch(key, "lora_down or lora_up is missing", where)
            down, up = parts["down"], parts["up"]
            if is_embedding(layer, adapter):
                down, up = up.T, down.T  # back to peft's A [r, num], B [dim, r]
            if tuple(down.shape) != tuple(params["down"].shape) or tuple(up.shape) != tuple(
                params["up"].shape
            ):
                raise _mismatch(
                    key, f"file rank {down.shape[0]}, network rank {params['down'].shape[0]}", where
                )
            if from_diffusers:
                file_scale = 1.0  # diffusers format: alpha = rank (our writer bakes the scale into lora_B)
            else:
                alpha = parts.get("alpha")
                file_scale = (float(alpha) / down.shape[0]) if alpha is not None else 1.0
            params["down"].copy_(down.to(params["down"].dtype))
            params["up"].copy_((up.float() * (file_scale / scaling)).to(params["up"].dtype))
            if "dora_scale" in parts:
                if "magnitude" in params and parts["dora_scale"].numel() == params["magnitude"].numel():
                    mag = params["magnitude"]  # peft: [out] for Linear, [1, out, 1, 1] for Conv2d
                    value = parts["dora_scale"]
                    if dora_norm == "base":  # written for ComfyUI by dora_scale_for
                        value = magnitude_from(layer, value, adapter)
                    mag.copy_(value.reshape(mag.shape).to(mag.dtype))
                else:
                    unused.append("dora_scale")
            unused += [p for p in parts if p not in ("down", "up", "alpha", "dora_scale")]
            return unused
        names = LOHA_PARAMS if kind == "loha" else LOKR_PARAMS
        file_names = {n for n in parts if n in names}
        if file_names != set(params):
            raise _mismatch(
                key,
                f"the file stores {sorted(file_names)}, this network {sorted(params)} (another rank?)",
                where,
            )
        for n in params:
            _check_shape(key, n, parts[n], params[n], where)
        alpha = parts.get("alpha")
        if kind == "loha":
            file_scale = float(alpha) / parts["hada_w1_b"].shape[0] if alpha is not None else 1.0
            first = "hada_w1_a"
        else:
            dim = None
            if "lokr_w1_b" in parts:
                dim = parts["lokr_w1_b"].shape[0]
            if "lokr_w2_b" in parts:
                dim = parts["lokr_w2_b"].shape[0]
            file_scale = float(alpha) / dim if (alpha is not None and dim is not None) else 1.0
            first = "lokr_w1" if "lokr_w1" in params else "lokr_w1_a"
        for n, param in params.items():
            value = parts[n].float()
            if n == first:
                value = value * (file_scale / scaling)
            param.copy_(value.to(param.dtype))
        unused += [p for p in parts if p not in names and p != "alpha"]
    return unused
