"""Named events of a training run, for whatever watches it (TensorBoard logging, a notebook).

The trainer only trains: it calls these hooks and imports no view. The CLI passes the callbacks the
user asked for (``--tensorboard``); from Python, pass any object with these methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Callback:
    """Every hook does nothing by default; override the ones you need."""

    def on_start(self, run_dir: Path, model: torch.nn.Module, test_x: torch.Tensor, test_c: torch.Tensor | None) -> None:
        """Before the first epoch (of this sitting: a resumed run starts again here)."""

    def on_step(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Every few steps: batch means of the plain ELBO terms (``negative_elbo``, ``rec``, ``kl``)."""

    def on_epoch(self, epoch: int, record: dict[str, Any], model: torch.nn.Module) -> None:
        """After each epoch, with its ``metrics.jsonl`` record."""

    def on_end(self) -> None:
        """When training stops, normally or not."""
