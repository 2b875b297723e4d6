"""Files resnets reads and writes: safetensors weights and their metadata, the safe torch.load check,
atomic writes. The lowest layer: imports nothing of resnets but its errors."""
