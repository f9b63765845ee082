"""The `sft` section: what `rlvr sft RECIPE` trains on (`rlvr.loop.sft`).

`rlvr sft` reads the same recipe as `rlvr train`: `model` (and `model.lora`), `trainer`
(backend, ranks, lr and its schedule, micro-batches), `run`, `checkpoint`, `cluster`,
`service` and `logging` mean what they mean there; `data.system_prompt`,
`data.chat_template_kwargs` and `data.enable_thinking` shape the chat template. This
section adds the supervised data and how long to train; `rlvr train` ignores it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from rlvr.config.checks import require


@dataclass
class SFTConfig:
    # .jsonl files of {"messages": [{"role", "content"}, ...]} rows (what `rlvr sample` writes);
    # the loss is on the assistant messages' tokens (and their end-of-turn), nothing else
    train_path: Optional[str] = None
    eval_path: Optional[str] = None  # held-out rows: `eval/loss` at step 0, every `eval_every` steps and at the end
    eval_rows: int = 0  # without eval_path: hold out this many train rows (the last ones) for `eval/loss`
    messages_key: str = "messages"
    epochs: float = 1.0  # passes over the train rows (a fraction is fine)
    max_steps: Optional[int] = None  # optimizer updates; null: epochs * rows / batch_size, rounded up
    batch_size: int = 32  # rows per optimizer update, over all trainer ranks
    max_length: int = 1024  # tokens per row (prompt + conversation); longer rows are dropped (`sft/skipped_too_long`)
    eval_every: int = 0  # steps between `eval/loss` rows (0: step 0 and the end only)
    shuffle: bool = True  # a fresh seeded order per epoch (`run.seed`); false: file order

    def check(self) -> None:
        require(self.epochs > 0, "sft.epochs", "must be > 0")
        require(self.max_steps is None or self.max_steps >= 1, "sft.max_steps", "must be >= 1 (or null)")
        require(self.batch_size >= 1, "sft.batch_size", "must be >= 1")
        require(self.max_length >= 2, "sft.max_length", "must be >= 2")
        require(self.eval_rows >= 0, "sft.eval_rows", "must be >= 0")
        require(self.eval_every >= 0, "sft.eval_every", "must be >= 0")
        require(bool(self.messages_key), "sft.messages_key", "must be a non-empty field name")
        for key in ("train_path", "eval_path"):
            path = getattr(self, key)
            if path is not None:
                require(os.path.isfile(os.path.expanduser(path)), f"sft.{key}", f"no such file: {path}")

    def check_for_sft(self, trainer) -> None:
        """What `rlvr sft` needs beyond the section's own checks (`trainer`: the `trainer` section)."""
        require(self.train_path is not None, "sft.train_path",
                "rlvr sft needs a .jsonl file of {\"messages\": [...]} rows (e.g. what `rlvr sample` wrote)")
        require(not (self.eval_path and self.eval_rows), "sft.eval_rows",
                "hold out rows or give sft.eval_path, not both")
        require(trainer.updates_per_step == 1, "trainer.updates_per_step",
                "must be 1 for rlvr sft (sft.batch_size rows make one optimizer update)")
        require(self.batch_size >= trainer.num_workers, "sft.batch_size",
                f"must be >= trainer.num_workers ({trainer.num_workers}): every rank trains on a row")
