"""ComfyUI API-format workflows: reading one, checking the node map, injecting prompt, seed and image.

An API-format workflow ("Save (API Format)" in ComfyUI) is a JSON object of node id -> {"class_type",
"inputs", "_meta"}; an input is a literal (string, number) or a link `[node_id, output_index]`. This
is the `prompt` object ComfyUI's POST /prompt takes (ComfyUI server.py `post_prompt`, validated by
execution.py `validate_prompt`). The UI format ("Save") has `nodes` and `links` lists instead and is
refused with a message saying so.

Injection never edits the loaded workflow: it returns a deep copy with the literal inputs replaced.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from engine.errors import LoratuiError
from engine.textfile import read_user_file

# Inputs each mapped node must have as a literal value (the node classes users map, by input name, so
# custom nodes with the same inputs work too).
LOADER_INPUTS = ("image",)  # LoadImage
PROMPT_INPUTS = ("text", "prompt", "text_g", "text_l")  # CLIPTextEncode(SDXL), TextEncodeQwenImageEdit
SEED_INPUTS = ("seed", "noise_seed")  # KSampler, KSamplerAdvanced, RandomNoise, SamplerCustom
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")

UI_FORMAT_HINT = (
    'in ComfyUI use Workflow > Export (API) (older versions: enable "Dev mode Options" in the settings, '
    'then "Save (API Format)") and point collect.workflow at that file'
)


def load_workflow(path: Path) -> dict[str, dict[str, Any]]:
    """The nodes of an API-format workflow file: {node id: {"class_type", "inputs", ...}}.

    Raises LoratuiError for a missing or unreadable file, invalid JSON (with line and column), a
    workflow saved in the UI format (it has `nodes`/`links`), and anything that is not a node table.
    """
    where = "collect.workflow"
    text = read_user_file(
        path,
        what="workflow file",
        where=where,
        missing_hint="relative paths start at the workspace; export the workflow with Save (API Format)",
        read_hint="is it a JSON file?",
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoratuiError(
            f"workflow {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint="export it again from ComfyUI with Save (API Format)",
            where=where,
        ) from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise LoratuiError(
            f'workflow {path} is saved in ComfyUI\'s UI format (it has "nodes" and "links"), '
            "not the API format the server runs",
            hint=UI_FORMAT_HINT,
            where=where,
        )
    if not isinstance(data, dict) or not data:
        raise LoratuiError(
            f"workflow {path} is not an API-format workflow (expected an object of nodes)",
            hint=UI_FORMAT_HINT,
            where=where,
        )
    bad = [k for k, v in data.items() if not (isinstance(v, dict) and isinstance(v.get("class_type"), str))]
    if bad:
        raise LoratuiError(
            f'workflow {path}: entry "{bad[0]}" is not a node (no "class_type")',
            hint=UI_FORMAT_HINT,
            where=where,
        )
    for node in data.values():
        node.setdefault("inputs", {})
    return data


def digest(workflow: dict) -> str:
    """A short content hash of a workflow (part of each submission's identity on resume)."""
    return hashlib.sha256(json.dumps(workflow, sort_keys=True).encode()).hexdigest()[:16]


def node_list(workflow: dict, ids: list[str] | None = None) -> str:
    """`3 (KSampler), 9 (SaveImage)`: node ids with their class types, in id order."""
    keys = sorted(ids if ids is not None else workflow, key=_id_order)
    return ", ".join(f"{k} ({workflow[k].get('class_type', '?')})" for k in keys) or "none"


def _id_order(node_id: str) -> tuple:
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def _literal_inputs(node: dict, names: tuple[str, ...], kind: type | tuple) -> list[str]:
    inputs = node.get("inputs", {})
    return [n for n in names if isinstance(inputs.get(n), kind) and not isinstance(inputs.get(n), bool)]


def nodes_with_inputs(workflow: dict, names: tuple[str, ...], kind: type | tuple) -> list[str]:
    """Ids of nodes with a literal input of one of `names` (e.g. every seed-bearing sampler)."""
    return sorted((k for k, n in workflow.items() if _literal_inputs(n, names, kind)), key=_id_order)


def require_node(workflow: dict, node_id: str, key: str) -> dict:
    """The node `node_id` of the workflow; a missing id lists the ids there are, with class types."""
    node = workflow.get(str(node_id))
    if node is None:
        raise LoratuiError(
            f'collect.{key} = "{node_id}": no node with that id in the workflow',
            hint=f"the workflow's nodes are: {node_list(workflow)}",
            where=f"collect.{key}",
        )
    return node


def _wrong_class(workflow: dict, node_id: str, key: str, wanted: str, candidates: list[str]) -> LoratuiError:
    cls = workflow[node_id].get("class_type")
    return LoratuiError(
        f'collect.{key} = "{node_id}" is a {cls} node, not {wanted}',
        hint=f"nodes that fit: {node_list(workflow, candidates)}",
        where=f"collect.{key}",
    )


def check_loader(workflow: dict, node_id: str) -> None:
    node = require_node(workflow, node_id, "image_loader_node")
    if not _literal_inputs(node, LOADER_INPUTS, str):
        fits = nodes_with_inputs(workflow, LOADER_INPUTS, str)
        raise _wrong_class(
            workflow, node_id, "image_loader_node", 'a LoadImage node (an "image" input)', fits
        )


def check_prompt_node(workflow: dict, node_id: str) -> None:
    node = require_node(workflow, node_id, "positive_prompt_node")
    if not _literal_inputs(node, PROMPT_INPUTS, str):
        fits = nodes_with_inputs(workflow, PROMPT_INPUTS, str)
        raise _wrong_class(workflow, node_id, "positive_prompt_node", 'a text encoder (a "text" input)', fits)


def check_seed_node(workflow: dict, node_id: str) -> None:
    node = require_node(workflow, node_id, "seed_node")
    if not _literal_inputs(node, SEED_INPUTS, int):
        fits = nodes_with_inputs(workflow, SEED_INPUTS, int)
        raise _wrong_class(workflow, node_id, "seed_node", 'a sampler (a "seed" or "noise_seed" input)', fits)


def is_output_node(node: dict) -> bool:
    return node.get("class_type") in OUTPUT_CLASSES or isinstance(
        node.get("inputs", {}).get("filename_prefix"), str
    )


def check_output_node(workflow: dict, node_id: str) -> None:
    node = require_node(workflow, node_id, "output_node")
    if not is_output_node(node):
        fits = sorted((k for k, n in workflow.items() if is_output_node(n)), key=_id_order)
        raise _wrong_class(workflow, node_id, "output_node", "a SaveImage or PreviewImage node", fits)


def prefix_outputs(workflow: dict, prefix: str) -> list[str]:
    """Ids of the SaveImage nodes whose filename_prefix starts with `prefix` (full-workflow mode)."""
    found = [
        k
        for k, n in workflow.items()
        if isinstance(n.get("inputs", {}).get("filename_prefix"), str)
        and n["inputs"]["filename_prefix"].startswith(prefix)
    ]
    if not found:
        savers = [
            k for k, n in workflow.items() if isinstance(n.get("inputs", {}).get("filename_prefix"), str)
        ]
        have = ", ".join(
            f'{k} ("{workflow[k]["inputs"]["filename_prefix"]}")' for k in sorted(savers, key=_id_order)
        )
        raise LoratuiError(
            f'collect.output_prefix = "{prefix}": no SaveImage node has a filename_prefix starting with it',
            hint=f"SaveImage nodes and their prefixes: {have or 'none'}",
            where="collect.output_prefix",
        )
    return sorted(found, key=_id_order)


def inject(
    workflow: dict,
    *,
    loader_node: str = "",
    image_name: str | None = None,
    prompt_node: str = "",
    prompt: str | None = None,
    seed: int | None = None,
) -> dict:
    """A copy of `workflow` with the uploaded image, the prompt text and the seed put in.

    The seed goes into every literal `seed`/`noise_seed` input (every KSampler-like node), so a
    workflow with a refiner or a second pass gets it too. The prompt goes into every literal text
    input of `prompt_node` (`text_g` and `text_l` of CLIPTextEncodeSDXL alike).
    """
    out = copy.deepcopy(workflow)
    if image_name is not None and loader_node:
        out[loader_node]["inputs"]["image"] = image_name
    if prompt is not None and prompt_node:
        node = out[prompt_node]
        for name in _literal_inputs(node, PROMPT_INPUTS, str):
            node["inputs"][name] = prompt
    if seed is not None:
        for node_id in nodes_with_inputs(out, SEED_INPUTS, int):
            for name in _literal_inputs(out[node_id], SEED_INPUTS, int):
                out[node_id]["inputs"][name] = int(seed)
    return out


def seed_of(workflow: dict, node_id: str) -> int:
    """The literal seed of a sampler node (its first seed-like input)."""
    node = workflow[node_id]
    return int(node["inputs"][_literal_inputs(node, SEED_INPUTS, int)[0]])
