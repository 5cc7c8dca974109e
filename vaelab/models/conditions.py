"""What a model is conditioned on: nothing, a class label, or continuous covariates — as objects.

A conditional VAE (Sohn et al. 2015) reads a condition c in both networks, q(z|x, c) and p(x|z, c),
and bounds log p(x|c). Everything that depends on what c *is* lives in one :class:`Condition` per
kind, registered in :data:`CONDITIONS` under the name ``ModelConfig.condition`` holds:

- which tensor of a data split is c (``Split.y`` or ``Split.c``), and its missing entries (labels
  -1, covariates NaN);
- the vector the networks read (one-hot labels; covariates standardised with training statistics);
- how training values are hidden (``--labelled N`` class-balanced, ``--missing-frac p`` at random)
  and what the model config then records;
- which bound a batch adds when values are missing (M2 for labels, the covariate bound of
  Ramchandran et al. 2022; both in ``bounds/missing.py``) and the extra modules they need
  (q(y|x), q(c_missing|x, c_observed));
- conditions for samples and pictures.

Nothing outside this module compares the condition's name.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaelab.config import ConfigError, ModelConfig, RunConfig
from vaelab.data.datasets import Dataset, Split
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.bounds.objectives import BatchSums, Objective
    from vaelab.models.vae import VAE

HIDE_SEED_OFFSET = 7919  # hiding draws its own stream from data_seed, independent of the split


class Condition:
    """No condition: an unconditional VAE. The base of the conditional kinds."""

    name = "none"
    field: str | None = None  # the Split attribute that holds c
    missing_value: float = math.nan
    is_label = False  # c is one class label (the explorer offers a class selector)
    is_continuous = False  # c holds continuous covariates

    def dim(self, config: ModelConfig) -> int:
        """Length of the vector the networks read."""
        return 0

    def of(self, split: Split) -> torch.Tensor | None:
        """The tensor passed as ``c`` for ``split``: labels ``[N]``, covariates ``[N, K]`` or None."""
        return None if self.field is None else getattr(split, self.field)

    def missing(self, c: torch.Tensor) -> torch.Tensor:
        """Which entries of ``c`` are missing (same shape)."""
        return torch.isnan(c)

    def hide_at_random(self, c: torch.Tensor, frac: float, rng: np.random.Generator) -> torch.Tensor:
        """``c`` with each entry hidden with probability ``frac``."""
        hidden = torch.from_numpy(rng.random(tuple(c.shape)) < frac)
        return c.masked_fill(hidden, self.missing_value)

    def check(self, config: RunConfig, dataset: Dataset) -> None:
        """One-line errors when the data cannot support this condition or the requested hiding."""
        if config.data.labelled is not None or config.data.missing_frac is not None:
            setting = "labelled" if config.data.labelled is not None else "missing_frac"
            raise ConfigError(setting, "hides covariates of a conditional model: add --condition label or covariates")

    def model_settings(self, dataset: Dataset) -> dict[str, Any]:
        """The model-config fields that come from the (already hidden) data."""
        return {"class_names": None, "covariate_names": None, "infer_missing": False}

    def vector(self, model: VAE, c: torch.Tensor | None) -> torch.Tensor | None:
        if c is not None:
            raise ValueError("this model is unconditional: pass no condition c")
        return None

    def add_modules(self, model: VAE) -> None:
        """Register what this condition needs on the model (statistics, inference networks)."""

    def initialise(self, model: VAE, train: Split) -> None:
        """Before training: what the model learns of c from the training split (covariate statistics)."""

    def noise_dim(self, model: VAE) -> int:
        """Standard normals per example this condition's bound draws beyond z."""
        return 0

    def training_weight(self, config: RunConfig, c: torch.Tensor | None) -> float:
        """Weight of the supervised term per observed value (0 when nothing is inferred)."""
        return 0.0

    def batch_sums(self, model: VAE, x: torch.Tensor, c: torch.Tensor | None, eps: torch.Tensor,
                   objective: Objective, weight: float, classify_only: torch.Tensor | None) -> BatchSums:
        """Batch totals of what one step minimises: the objective on the estimator's terms, or, when
        the model infers missing values of c, this condition's bound with them (``bounds/missing.py``)."""
        if model.config.infer_missing:
            return self.bound_with_missing(model, x, c, eps, objective, weight, classify_only)
        from vaelab.bounds.objectives import objective_sums

        return objective_sums(model, x, c, eps, objective)

    def bound_with_missing(self, model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor,
                           objective: Objective, weight: float, classify_only: torch.Tensor | None) -> BatchSums:
        raise AssertionError("an unconditional model infers no condition")

    def sample_conditions(self, model: VAE, n: int, *, label: int | str | None = None, grid: bool = False,
                          covariates: dict[str, float] | None = None,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int | None]:
        """Conditions for n samples and the grid width that shows them best."""
        if label is not None or grid:
            raise VaelabError(f"--{'label' if label is not None else 'grid'}: the model is not conditioned on labels")
        if covariates:
            raise VaelabError("--covariate: the model is not conditioned on continuous covariates")
        return None, None

    def picture_conditions(self, model: VAE, n: int, test_c: torch.Tensor | None) -> tuple[torch.Tensor | None, int | None]:
        """Conditions for a picture of n samples, and its grid width (None: square)."""
        return None, None

    def fixed(self, model: VAE, label: int | str = 0, example_c: torch.Tensor | None = None) -> torch.Tensor | None:
        """The one condition ``[1, ...]`` at which decoder pictures (manifold, traversals) are drawn."""
        return None

    def describe(self, model: VAE, label: int | str = 0) -> str:
        """What a decoder picture drawn at :meth:`fixed` is conditioned on, for its title."""
        return ""


class LabelCondition(Condition):
    """c is a class label; the networks read its one-hot vector (or a probability vector)."""

    name = "label"
    field = "y"
    missing_value = -1
    is_label = True

    def dim(self, config: ModelConfig) -> int:
        assert config.class_names, "label models need class_names (filled in from the data)"
        return len(config.class_names)

    def missing(self, c: torch.Tensor) -> torch.Tensor:
        return c < 0

    def check(self, config: RunConfig, dataset: Dataset) -> None:
        if dataset.train.y is None:
            raise ConfigError("condition", f"label needs labelled data, but {config.data.dataset} has no labels")

    def model_settings(self, dataset: Dataset) -> dict[str, Any]:
        infer = bool(self.missing(dataset.train.y).any())
        return {"class_names": dataset.classes, "covariate_names": None, "infer_missing": infer}

    def vector(self, model: VAE, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            raise ValueError("this model is conditioned on label: pass c")
        classes = model.condition_dim
        if c.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if bool(((c < 0) | (c >= classes)).any()):
                raise ValueError(f"labels must be in 0..{classes - 1}")
            return F.one_hot(c.long(), classes).to(model.dtype)
        return c.to(model.dtype)  # already a one-hot / probability vector

    def add_modules(self, model: VAE) -> None:
        config = model.config
        if not config.infer_missing:
            return
        from vaelab.models.networks import build_encoder

        if config.classifier == "shared":  # q(y|x): a softmax layer on the encoder's hidden layers
            model.label_head = nn.Linear(model.encoder_net.n_features, model.condition_dim)
        else:  # q(y|x): a network of its own (Kingma et al.)
            model.label_net = build_encoder(config, model.condition_dim)

    def training_weight(self, config: RunConfig, c: torch.Tensor | None) -> float:
        return _supervised_weight(self, config, c)

    def bound_with_missing(self, model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor,
                           objective: Objective, weight: float, classify_only: torch.Tensor | None) -> BatchSums:
        from vaelab.bounds.missing import label_sums

        return label_sums(model, x, c, eps, objective, weight, classify_only)

    def class_index(self, model: VAE, label: int | str) -> int:
        """A class given by index or by name (``--label Trouser``)."""
        names = model.config.class_names or ()
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in names:
                raise VaelabError(f"--label: expected a class index 0..{len(names) - 1} or one of {', '.join(names)}, got {label!r}")
            return names.index(label)
        index = int(label)
        if not 0 <= index < len(names):
            raise VaelabError(f"--label: must be a class index 0..{len(names) - 1} (or a class name), got {label}")
        return index

    def sample_conditions(self, model: VAE, n: int, *, label: int | str | None = None, grid: bool = False,
                          covariates: dict[str, float] | None = None,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int | None]:
        if covariates:
            raise VaelabError("--covariate: the model is not conditioned on continuous covariates")
        classes, device = model.condition_dim, model.device
        if label is not None:
            return torch.full((n,), self.class_index(model, label), device=device), None
        if grid:
            return torch.arange(math.ceil(n / classes) * classes, device=device) % classes, classes
        return torch.randint(classes, (n,), generator=generator, device=device), None

    def picture_conditions(self, model: VAE, n: int, test_c: torch.Tensor | None) -> tuple[torch.Tensor | None, int | None]:
        by_class = model.condition_dim <= 16
        return torch.arange(n, device=model.device) % model.condition_dim, model.condition_dim if by_class else None

    def fixed(self, model: VAE, label: int | str = 0, example_c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tensor([self.class_index(model, label)], device=model.device)

    def describe(self, model: VAE, label: int | str = 0) -> str:
        index = self.class_index(model, label)
        return f", class {(model.config.class_names or ())[index]}"


class CovariateCondition(Condition):
    """c holds continuous covariates ``[K]``; the networks read them standardised, (c - mean) / std."""

    name = "covariates"
    field = "c"
    is_continuous = True

    def dim(self, config: ModelConfig) -> int:
        assert config.covariate_names, "covariate models need covariate_names (filled in from the data)"
        return len(config.covariate_names)

    def check(self, config: RunConfig, dataset: Dataset) -> None:
        if dataset.train.c is None:
            raise ConfigError(
                "condition",
                f"covariates needs continuous covariates (an .npz with c, or numeric class folders), "
                f"but {config.data.dataset} has none",
            )
        if config.data.labelled is not None:
            raise ConfigError("labelled", "applies to --condition label")

    def model_settings(self, dataset: Dataset) -> dict[str, Any]:
        infer = bool(self.missing(dataset.train.c).any())
        return {"class_names": None, "covariate_names": dataset.covariate_names, "infer_missing": infer}

    def vector(self, model: VAE, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            raise ValueError("this model is conditioned on covariates: pass c")
        return (c.to(model.dtype) - model.covariate_mean) / model.covariate_std

    def add_modules(self, model: VAE) -> None:
        # Training statistics of the covariates (saved with the weights).
        model.register_buffer("covariate_mean", torch.zeros(model.condition_dim))
        model.register_buffer("covariate_std", torch.ones(model.condition_dim))
        if model.config.infer_missing:
            from vaelab.models.networks import build_encoder

            # q(c|x, c_observed): mean and pre-softplus scale per covariate, reading the observed
            # values (0 where missing) and the mask of which are observed.
            model.covariate_net = build_encoder(model.config, 2 * model.condition_dim, 2 * model.condition_dim)

    def noise_dim(self, model: VAE) -> int:
        return model.condition_dim if model.config.infer_missing else 0

    @torch.no_grad()
    def initialise(self, model: VAE, train: Split) -> None:
        mean, std = covariate_statistics(train.c)
        model.covariate_mean.copy_(mean)
        model.covariate_std.copy_(std)

    def training_weight(self, config: RunConfig, c: torch.Tensor | None) -> float:
        return _supervised_weight(self, config, c)

    def bound_with_missing(self, model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor,
                           objective: Objective, weight: float, classify_only: torch.Tensor | None) -> BatchSums:
        from vaelab.bounds.missing import covariate_sums

        return covariate_sums(model, x, c, eps, objective, weight)

    def sample_conditions(self, model: VAE, n: int, *, label: int | str | None = None, grid: bool = False,
                          covariates: dict[str, float] | None = None,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int | None]:
        if label is not None or grid:
            raise VaelabError(f"--{'label' if label is not None else 'grid'}: the model is not conditioned on labels")
        names = model.config.covariate_names or ()
        row = model.covariate_mean.clone()
        for name, value in (covariates or {}).items():
            row[names.index(name)] = value
        return row.expand(n, -1), None

    def picture_conditions(self, model: VAE, n: int, test_c: torch.Tensor | None) -> tuple[torch.Tensor | None, int | None]:
        assert test_c is not None
        return test_c[torch.arange(n, device=test_c.device) % test_c.shape[0]], None

    def fixed(self, model: VAE, label: int | str = 0, example_c: torch.Tensor | None = None) -> torch.Tensor:
        assert example_c is not None, "covariate models are drawn at an example's covariates"
        return example_c.to(model.covariate_mean)[None]

    def describe(self, model: VAE, label: int | str = 0) -> str:
        return ", at the covariates of test example 1"


CONDITIONS: dict[str, Condition] = {
    "none": Condition(),
    "label": LabelCondition(),
    "covariates": CovariateCondition(),
}


def condition_for(config: ModelConfig) -> Condition:
    return CONDITIONS[config.condition]


def is_conditional(name: str | None) -> bool:
    """Whether a condition named in a config conditions the networks (False for unknown names)."""
    return name in CONDITIONS and CONDITIONS[name].field is not None


def _supervised_weight(condition: Condition, config: RunConfig, c: torch.Tensor | None) -> float:
    """alpha N / N_labelled per labelled example (Kingma et al.'s alpha = 0.1 N), or alpha N K /
    N_observed per observed covariate entry; an error when nothing is observed."""
    assert c is not None
    observed = int((~condition.missing(c)).sum())
    if observed == 0:
        setting = "labelled" if config.data.labelled is not None else "missing_frac"
        raise ConfigError(setting, f"no training example of {config.data.dataset} keeps a covariate")
    alpha = DEFAULT_ALPHA if config.train.alpha is None else config.train.alpha
    return alpha * c.numel() / observed


DEFAULT_ALPHA = 0.1  # M2 classification weight: Kingma et al. 2014's alpha = 0.1 N (bounds/missing.py)


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


def check_condition(config: RunConfig, dataset: Dataset) -> None:
    condition_for(config.model).check(config, dataset)


def hide_covariates(config: RunConfig, dataset: Dataset) -> Dataset:
    """The dataset with the training covariates hidden as ``--labelled`` / ``--missing-frac`` ask."""
    data, condition = config.data, condition_for(config.model)
    if data.labelled is None and not data.missing_frac:
        return dataset
    rng = np.random.default_rng([data.data_seed, HIDE_SEED_OFFSET])
    c = condition.of(dataset.train)
    assert c is not None and condition.field is not None
    if data.labelled is not None:
        assert dataset.classes is not None
        c = _keep_balanced_labels(c, len(dataset.classes), data.labelled, rng)
    else:
        c = condition.hide_at_random(c, data.missing_frac, rng)
    return replace(dataset, train=replace(dataset.train, **{condition.field: c}))


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
