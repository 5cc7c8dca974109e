"""Optional TensorBoard logging of a training run: the ELBO terms per step and per epoch, and pictures.

TensorBoard is an optional dependency (``pip install 'vaelab[tensorboard]'``): this module imports it
only when a :class:`TensorBoardLogger` is created, and says how to install it if it is missing.
Scalars are tagged ``<term>/<split>`` (``loss/train``, ``loss/val``, ``kl/val``, ...), so TensorBoard
draws train and validation of one ELBO term in one chart; ``loss`` is the negative ELBO in nats per
example, as everywhere in vaelab.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vaelab.errors import VaelabError
from vaelab.training.callbacks import Callback
from vaelab.views.images import image_grid

LOG_DIR = "tensorboard"
INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'"
SPLITS = ("train", "val", "test")


def _hwc(picture: Image.Image | torch.Tensor) -> np.ndarray:
    """A PIL image or an ``[N, C, H, W]`` batch (laid out with :func:`image_grid`) as ``[H, W, 3]`` uint8."""
    if isinstance(picture, torch.Tensor):
        picture = image_grid(picture.detach().clamp(0, 1).cpu())
    return np.asarray(picture.convert("RGB"))


class TensorBoardLogger:
    """Writes TensorBoard event files into ``log_dir`` (e.g. ``RUN/tensorboard``)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise VaelabError(INSTALL_HINT) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def step(self, global_step: int, terms: Mapping[str, float | torch.Tensor]) -> None:
        """Per-step training terms, e.g. ``{"loss": ..., "rec": ..., "kl": ...}`` (batch means), as ``step/<term>``."""
        for term, value in terms.items():
            self.writer.add_scalar(f"step/{term}", float(value), global_step)

    def epoch(
        self,
        epoch: int,
        record: Mapping[str, Any],
        samples: torch.Tensor | None = None,
        reconstructions: Image.Image | torch.Tensor | None = None,
    ) -> None:
        """One ``metrics.jsonl`` record (``train_loss`` becomes ``loss/train``) and optional pictures.

        ``samples`` is a batch ``[N, C, H, W]`` of images in [0, 1]; ``reconstructions`` a picture such
        as :func:`vaelab.views.images.reconstruction_grid` returns, or a batch.
        """
        for key, value in record.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, _, term = key.partition("_")
            tag = f"{term}/{split}" if split in SPLITS and term else f"epoch/{key}"
            self.writer.add_scalar(tag, float(value), epoch)
        if samples is not None:
            self.writer.add_image("samples", _hwc(samples), epoch, dataformats="HWC")
        if reconstructions is not None:
            self.writer.add_image("reconstructions", _hwc(reconstructions), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TensorBoardCallback(Callback):
    """``--tensorboard``: per-step terms, per-epoch records, samples and reconstructions in ``RUN/tensorboard/``."""

    def on_start(self, run_dir: Path, model: torch.nn.Module, test_x: torch.Tensor, test_c: torch.Tensor | None) -> None:
        self.logger = TensorBoardLogger(run_dir / LOG_DIR)
        self.test_x, self.test_c = test_x, test_c

    def on_step(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        self.logger.step(step, terms)

    def on_epoch(self, epoch: int, record: dict[str, Any], model: torch.nn.Module) -> None:
        from vaelab.views.run_views import pictures

        samples, reconstructions = pictures(model, self.test_x, self.test_c)
        self.logger.epoch(epoch, record, samples, reconstructions)

    def on_end(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
