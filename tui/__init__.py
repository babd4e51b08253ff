"""loratui terminal UI. Never imports torch, diffusers, peft or onnxruntime."""
