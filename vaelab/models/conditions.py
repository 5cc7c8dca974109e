"""What a conditional model is conditioned on, taken from the data: labels or continuous covariates.

One place decides, for a run's configuration and dataset, which tensor is the condition c of each
split (``Split.y`` for ``condition="label"``, ``Split.c`` for ``"covariates"``), which covariates the
training split hides (``--labelled N`` keeps a class-balanced subset of labels, ``--missing-frac p``
hides a random fraction), and what the model config must record (class or covariate names, whether
missing covariates are inferred). Hidden labels are -1 and hidden covariates NaN; validation and test
keep every value, so that evaluation and imputation can be scored against the truth.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from vaelab.config import ConfigError, RunConfig
from vaelab.data.datasets import Dataset, Split
from vaelab.errors import VaelabError
from vaelab.models.vae import VAE

HIDE_SEED_OFFSET = 7919  # hiding draws its own stream from data_seed, independent of the split


def condition_of(condition: str, split: Split) -> torch.Tensor | None:
    """The tensor passed as ``c`` for ``split``: labels ``[N]``, covariates ``[N, K]`` or None."""
    if condition == "label":
        return split.y
    if condition == "covariates":
        return split.c
    return None


def check_condition(config: RunConfig, dataset: Dataset) -> None:
    """One-line errors when the data cannot support the configured condition or hiding."""
    condition, data = config.model.condition, config.data
    if condition == "label" and dataset.train.y is None:
        raise ConfigError("condition", f"label needs labelled data, but {data.dataset} has no labels")
    if condition == "covariates" and dataset.train.c is None:
        raise ConfigError(
            "condition",
            f"covariates needs continuous covariates (an .npz with c, or numeric class folders), "
            f"but {data.dataset} has none",
        )
    if condition == "none" and (data.labelled is not None or data.missing_frac is not None):
        setting = "labelled" if data.labelled is not None else "missing_frac"
        raise ConfigError(setting, "hides covariates of a conditional model: add --condition label or covariates")
    if data.labelled is not None and condition != "label":
        raise ConfigError("labelled", "applies to --condition label")


def _keep_balanced_labels(y: torch.Tensor, n_classes: int, labelled: int, rng: np.random.Generator) -> torch.Tensor:
    """``y`` with all but ``labelled`` labels hidden, the kept ones spread evenly over the classes."""
    n = y.shape[0]
    if labelled > n:
        raise ConfigError("labelled", f"must be at most the {n} training examples, got {labelled}")
    keep = np.zeros(n, dtype=bool)
    labels = y.numpy()
    per_class = [rng.permutation(np.flatnonzero(labels == k)) for k in range(n_classes)]
    # Round-robin over classes: N // K of each, the remainder to the first classes that have more.
    taken = [0] * n_classes
    while sum(taken) < labelled:
        for k in range(n_classes):
            if taken[k] < len(per_class[k]) and sum(taken) < labelled:
                keep[per_class[k][taken[k]]] = True
                taken[k] += 1
    return torch.where(torch.from_numpy(keep), y, torch.full_like(y, -1))


def missing_mask(condition: str, c: torch.Tensor) -> torch.Tensor:
    """Which entries of a condition tensor are missing (same shape as ``c``): labels -1, covariates NaN."""
    return c < 0 if condition == "label" else torch.isnan(c)


def hide_at_random(condition: str, c: torch.Tensor, frac: float, rng: np.random.Generator) -> torch.Tensor:
    """``c`` with each label, or each covariate entry, hidden with probability ``frac``."""
    hidden = torch.from_numpy(rng.random(tuple(c.shape)) < frac)
    return c.masked_fill(hidden, -1 if condition == "label" else float("nan"))


def hide_covariates(config: RunConfig, dataset: Dataset) -> Dataset:
    """The dataset with the training covariates hidden as ``--labelled`` / ``--missing-frac`` ask."""
    data, condition = config.data, config.model.condition
    if data.labelled is None and not data.missing_frac:
        return dataset
    rng = np.random.default_rng([data.data_seed, HIDE_SEED_OFFSET])
    c = condition_of(condition, dataset.train)
    assert c is not None
    if data.labelled is not None:
        assert dataset.classes is not None
        c = _keep_balanced_labels(c, len(dataset.classes), data.labelled, rng)
    else:
        c = hide_at_random(condition, c, data.missing_frac, rng)
    field = "y" if condition == "label" else "c"
    return replace(dataset, train=replace(dataset.train, **{field: c}))


def is_missing(condition: str, split: Split) -> torch.Tensor | None:
    """``[N]`` bool: which examples of ``split`` miss (part of) their condition; None if unconditional."""
    c = condition_of(condition, split)
    if c is None:
        return None
    missing = missing_mask(condition, c)
    return missing if condition == "label" else missing.any(-1)


def model_settings(config: RunConfig, dataset: Dataset) -> dict:
    """The model-config fields that come from the (already hidden) data: names, and whether to infer c."""
    condition = config.model.condition
    if condition == "none":
        return {"class_names": None, "covariate_names": None, "infer_missing": False}
    missing = is_missing(condition, dataset.train)
    assert missing is not None
    infer = bool(missing.any())
    if condition == "label":
        return {"class_names": dataset.classes, "covariate_names": None, "infer_missing": infer}
    return {"class_names": None, "covariate_names": dataset.covariate_names, "infer_missing": infer}


def covariate_statistics(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each column of ``c: [N, K]`` over its observed (non-NaN) values."""
    observed = ~torch.isnan(c)
    counts = observed.sum(0).clamp(min=1)
    values = torch.nan_to_num(c)
    mean = values.sum(0) / counts
    var = ((values - mean).square() * observed).sum(0) / (counts - 1).clamp(min=1)
    std = var.sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def parse_covariate_values(specs: list[str], names: tuple[str, ...]) -> dict[str, float]:
    """``["angle=30", "scale=2"]`` -> {"angle": 30.0, "scale": 2.0}, checked against the model's names."""
    values: dict[str, float] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep or name not in names:
            raise VaelabError(f"--covariate: expected NAME=VALUE with NAME one of {', '.join(names)}, got {spec!r}")
        try:
            values[name] = float(raw)
        except ValueError:
            raise VaelabError(f"--covariate: {name} needs a number, got {raw!r}") from None
    return values


def sample_conditions(
    model: VAE, n: int, *, label: int | None = None, grid: bool = False, covariates: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor | None, int | None]:
    """Conditions for n samples and the grid width that shows them best.

    Label models: class ``label`` for every sample; with ``grid`` one column per class (n rounded
    up to whole rows); otherwise classes drawn from the uniform p(y). Covariate models: the values
    given, the training mean for the others. Unconditional models accept none of these.
    """
    condition = model.config.condition
    device = model.prior_loc.device
    if condition != "label" and (label is not None or grid):
        raise VaelabError(f"--{'label' if label is not None else 'grid'}: the model is not conditioned on labels")
    if condition != "covariates" and covariates:
        raise VaelabError("--covariate: the model is not conditioned on continuous covariates")
    if condition == "label":
        classes = model.condition_dim
        if label is not None:
            if not 0 <= label < classes:
                raise VaelabError(f"--label: must be a class index 0..{classes - 1}, got {label}")
            return torch.full((n,), label, device=device), None
        if grid:
            return torch.arange(math.ceil(n / classes) * classes, device=device) % classes, classes
        return torch.randint(classes, (n,), generator=generator, device=device), None
    if condition == "covariates":
        names = model.config.covariate_names or ()
        row = model.covariate_mean.clone()
        for name, value in (covariates or {}).items():
            row[names.index(name)] = value
        return row.expand(n, -1), None
    return None, None
