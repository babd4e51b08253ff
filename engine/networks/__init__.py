"""Trainable networks on a base model: LoRA / LoCon / LoHa / LoKr / DoRA adapters (peft), layer selection,
kohya/LyCORIS/diffusers export and import."""

from engine.networks.io import initial_steps, load_lora_file, save_lora, steps_from_metadata
from engine.networks.lora import AdaptedModule, LoraNetwork, attach_lora
from engine.networks.metadata import kohya_metadata

__all__ = [
    "AdaptedModule",
    "LoraNetwork",
    "attach_lora",
    "initial_steps",
    "kohya_metadata",
    "load_lora_file",
    "save_lora",
    "steps_from_metadata",
]
