"""From a run's configuration to tensors on a device: the data pipeline and the device choice.

Training, evaluation, sampling and every view use these two functions, so they all see the same
splits, the same binarisation and the same device rules.
"""

from __future__ import annotations

import torch

from vaelab.models.conditions import check_condition, hide_covariates
from vaelab.config import ConfigError, RunConfig
from vaelab.data.datasets import Dataset, binarize_dataset, load_dataset
from vaelab.models.likelihoods import LIKELIHOODS


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else must be a usable torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"not a torch device: {name!r} (try cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} requested but this torch has no usable CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", f"{name!r} requested but MPS is not available")
    return device


def load_data(config: RunConfig) -> Dataset:
    """The run's dataset with its splits, binarised as configured (dynamic: val/test fixed, train raw),
    and with the training covariates hidden as ``--labelled`` / ``--missing-frac`` ask."""
    data = config.data
    dataset = load_dataset(data.dataset, data_dir=data.data_dir, val_size=data.val_size, seed=data.data_seed)
    likelihood = config.model.likelihood
    if data.binarize != "none" or (likelihood != "auto" and LIKELIHOODS[likelihood].unit_interval):
        lo, hi = float(dataset.train.x.min()), float(dataset.train.x.max())
        if lo < 0 or hi > 1:
            setting = "binarize" if data.binarize != "none" else "likelihood"
            raise ConfigError(
                setting,
                f"{data.binarize if setting == 'binarize' else config.model.likelihood} needs data in [0, 1], "
                f"but {data.dataset} ranges over [{lo:.3g}, {hi:.3g}]; use --likelihood gaussian",
            )
    check_condition(config, dataset)
    return hide_covariates(config, binarize_dataset(dataset, data.binarize, seed=data.data_seed))
