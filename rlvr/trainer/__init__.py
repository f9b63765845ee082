"""Trainer group: torch.distributed ranks as Ray actors (imports nothing heavy here)."""
