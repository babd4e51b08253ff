"""kohya-style block ids (IN00.., MID, OUT00.., BASE) for UNet modules, computed from the UNet's structure.

The ids are the LDM block indices (the ones block-weight tools and sd-webui-traintrain use):
`input_blocks.N` -> INnn, `middle_block` -> MID (alias M00), `output_blocks.N` -> OUTnn, and "BASE"
for the text encoder(s). SD1.5/SD2 have IN00..IN11, MID, OUT00..OUT11; SDXL IN00..IN08, MID,
OUT00..OUT08. The diffusers -> LDM mapping is counted on the live UNet (engine.models.ldm_names), so
the same code serves the full-size models and the tiny test ones.
"""

from __future__ import annotations

import re

from engine.errors import LoratuiError
from engine.models.ldm_names import LdmNameMap

BASE = "BASE"
MID = "MID"
_ALIASES = {"M00": MID, "MID00": MID, "TE": BASE}
_LDM_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.|^middle_block\.")


def block_id_of_ldm(ldm_name: str) -> str | None:
    """IN04 / MID / OUT03 for an LDM module path; None for time_embed, label_emb, out."""
    m = _LDM_BLOCK.match(ldm_name)
    if m is None:
        return None
    if m.group(1) is None:
        return MID
    return ("IN" if m.group(1) == "input_blocks" else "OUT") + f"{int(m.group(2)):02d}"


class BlockMap:
    """Block id of every UNet module path, and the list of ids this UNet has."""

    def __init__(self, unet) -> None:
        self._ldm = LdmNameMap(unet)
        ids: set[str] = set()
        for name, _ in unet.named_modules():
            bid = self.block_of(name)
            if bid is not None:
                ids.add(bid)
        self.valid = [BASE, *_sorted(ids)]

    def block_of(self, name: str) -> str | None:
        try:
            return block_id_of_ldm(self._ldm.to_ldm(name))
        except KeyError:
            return None

    def parse(self, blocks, *, where: str = "network.blocks") -> set[str]:
        """Normalize a config list (case-insensitive; M00 = MID) or raise a LoratuiError listing valid ids."""
        chosen: set[str] = set()
        unknown: list[str] = []
        for raw in blocks:
            bid = str(raw).strip().upper()
            bid = _ALIASES.get(bid, bid)
            m = re.fullmatch(r"(IN|OUT)(\d{1,2})", bid)
            if m:
                bid = f"{m.group(1)}{int(m.group(2)):02d}"
            if bid in self.valid:
                chosen.add(bid)
            else:
                unknown.append(str(raw))
        if unknown:
            raise LoratuiError(
                f"unknown block id(s) {', '.join(repr(u) for u in unknown)} for this model",
                hint="valid block ids: " + ", ".join(self.valid),
                where=where,
            )
        return chosen


def _sorted(ids: set[str]) -> list[str]:
    def key(bid: str):
        if bid == MID:
            return (1, 0)
        return (0 if bid.startswith("IN") else 2, int(bid.lstrip("INOUT")))

    return sorted(ids, key=key)
