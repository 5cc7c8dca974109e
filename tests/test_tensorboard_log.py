"""vaelab.views.tensorboard_log: scalars and images read back from the event file, and the install hint."""

from __future__ import annotations

import sys

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.views.tensorboard_log import INSTALL_HINT, TensorBoardLogger
from vaelab.views.images import reconstruction_grid

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_scalars_and_images_round_trip(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb")
    for step in range(3):
        logger.step(step, {"negative_elbo": 30.0 - step, "rec": torch.tensor(25.0), "kl": 5.0})
    x = torch.rand(6, 1, 8, 8)
    record = {"epoch": 1, "train_negative_elbo": 28.5, "val_negative_elbo": 29.0, "train_kl": 4.0, "val_kl": 4.5, "seconds": 0.2}
    logger.epoch(1, record, samples=x, reconstructions=reconstruction_grid(x, x))
    logger.epoch(2, {**record, "epoch": 2, "val_negative_elbo": 27.0}, samples=None, reconstructions=x)
    logger.close()

    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"step/negative_elbo", "step/rec", "step/kl", "negative_elbo/train", "negative_elbo/val", "kl/train", "kl/val",
            "epoch/seconds"} <= set(tags["scalars"])
    assert [e.value for e in events.Scalars("step/negative_elbo")] == [30.0, 29.0, 28.0]
    assert [(e.step, e.value) for e in events.Scalars("negative_elbo/val")] == [(1, 29.0), (2, 27.0)]
    assert [e.step for e in events.Images("samples")] == [1]
    assert [e.step for e in events.Images("reconstructions")] == [1, 2]
    image = events.Images("samples")[0]
    assert (image.width, image.height) > (0, 0)


def test_missing_tensorboard_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(VaelabError) as error:
        TensorBoardLogger(tmp_path / "tb")
    assert str(error.value) == INSTALL_HINT
    assert "pip install 'vaelab[tensorboard]'" in INSTALL_HINT
