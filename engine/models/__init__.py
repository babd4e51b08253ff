"""Base models (SD1.5 / SD2 / SDXL): offline loading from diffusers folders or single files."""

from engine.models.base import BaseModel, TextEmbeds
from engine.models.loader import load_base_model

__all__ = ["BaseModel", "TextEmbeds", "load_base_model"]
