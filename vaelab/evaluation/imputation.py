"""Imputation: fill missing covariates with the model's inference networks, scored against the truth.

A model trained with missing covariates learned q(y|x) (labels, M2) or q(c_missing|x, c_observed)
(continuous covariates). Imputing is reading them off: the most probable class, or the posterior mean
of each missing covariate. :func:`impute_run` does it on a split of the run's own data where the
truth is known: on ``train`` the covariates that ``--labelled`` / ``--missing-frac`` hid during
training; on ``val``/``test`` a fraction ``hide_frac`` hidden at random now. Each figure comes with a
baseline that ignores x: the majority class among the observed training labels, or the mean of the
observed training covariates, so that "better than guessing" is visible in one line.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab import rundir
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json
from vaelab.models.vae import VAE
from vaelab.data.pipeline import load_data, resolve_device

BATCH = 1024
HIDE_SEED = 2024


@torch.no_grad()
def impute_labels(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """argmax_y q(y|x) for every row of ``x``: ``[N]`` int64."""
    return torch.cat([model.classify(x[i : i + BATCH]).logits.argmax(-1) for i in range(0, x.shape[0], BATCH)])


@torch.no_grad()
def impute_covariates(model: VAE, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``c: [N, K]`` with its NaN entries replaced by the posterior mean of q(c_missing|x, c_observed)."""
    parts = []
    for i in range(0, x.shape[0], BATCH):
        batch = c[i : i + BATCH]
        mean = model.covariate_mean + model.covariate_std * model.covariate_posterior(x[i : i + BATCH], batch).loc
        parts.append(torch.where(torch.isnan(batch), mean, batch))
    return torch.cat(parts)


def _label_report(model: VAE, x: torch.Tensor, shown: torch.Tensor, truth: torch.Tensor, observed_train: torch.Tensor) -> dict[str, Any]:
    hidden = shown < 0
    predicted = impute_labels(model, x)
    majority = int(torch.bincount(observed_train[observed_train >= 0]).argmax())
    n = int(hidden.sum())
    return {
        "kind": "label",
        "n_missing": n,
        "accuracy": float((predicted[hidden] == truth[hidden]).float().mean()) if n else None,
        "baseline": "majority class of the observed training labels",
        "baseline_accuracy": float((truth[hidden] == majority).float().mean()) if n else None,
        "accuracy_all": float((predicted == truth).float().mean()),
    }, predicted


def _covariate_report(model: VAE, x: torch.Tensor, shown: torch.Tensor, truth: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    hidden = torch.isnan(shown)
    filled = impute_covariates(model, x, shown)
    baseline = model.covariate_mean.expand_as(truth)
    names = model.config.covariate_names or ()
    per_covariate = {}
    for k, name in enumerate(names):
        rows = hidden[:, k]
        if not rows.any():
            continue
        error = filled[rows, k] - truth[rows, k]
        base_error = baseline[rows, k] - truth[rows, k]
        per_covariate[name] = {
            "n_missing": int(rows.sum()),
            "rmse": float(error.square().mean().sqrt()),
            "baseline_rmse": float(base_error.square().mean().sqrt()),
            "r2": float(1 - error.square().sum() / (truth[rows, k] - truth[rows, k].mean()).square().sum().clamp(min=1e-12)),
        }
    return {
        "kind": "covariates",
        "n_missing": int(hidden.sum()),
        "baseline": "mean of the observed training covariates",
        "covariates": per_covariate,
    }, filled


def impute_run(
    run_dir: str | os.PathLike, split: str = "train", *, hide_frac: float = 1.0, seed: int = 0,
    device: str = "auto", out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Impute the missing covariates of a split of the run's data and score them; saved as
    ``RUN/imputation-<split>.json``. ``out`` also writes an ``.npz`` with the split's ``index``
    (row), ``imputed`` and ``truth`` covariates and the boolean ``was_missing``."""
    run = rundir.load(run_dir, device=resolve_device(device))
    model, config = run.model, run.config
    condition = model.condition
    if not config.model.infer_missing:
        what = "q(y|x): it was trained with every label observed" if condition.is_label else (
            "q(c|x): it was trained with every covariate observed" if condition.is_continuous else
            "condition to impute: it is unconditional")
        raise VaelabError(
            f"{run_dir}: the model has no {what} (train with --labelled N or --missing-frac P, and "
            "--condition label|covariates, to impute)"
        )
    if not 0 < hide_frac <= 1:
        raise VaelabError(f"--hide-frac: must be in (0, 1], got {hide_frac}")
    hidden_data = load_data(config)
    complete = load_data(replace(config, data=replace(config.data, labelled=None, missing_frac=None)))
    part, truth_part = getattr(hidden_data, split), getattr(complete, split)
    truth = condition.of(truth_part)
    shown = condition.of(part) if split == "train" else condition.hide_at_random(
        truth, hide_frac, np.random.default_rng([seed, HIDE_SEED]))
    x = part.x.to(model.device)
    truth, shown = truth.to(x.device), shown.to(x.device)
    if condition.is_label:
        observed_train = condition.of(hidden_data.train).to(x.device)
        report, filled = _label_report(model, x, shown, truth, observed_train)
        filled = torch.where(shown < 0, filled, shown)
    else:
        report, filled = _covariate_report(model, x, shown, truth)
    report.update({"split": split, "n": int(x.shape[0]), "hide_frac": None if split == "train" else hide_frac})
    atomic_write_json(Path(run_dir) / f"imputation-{split}.json", report)
    if out is not None:
        _write_npz(Path(out), filled.cpu(), truth.cpu(), condition.missing(shown).cpu())
    return report


def _write_npz(path: Path, imputed: torch.Tensor, truth: torch.Tensor, was_missing: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, index=np.arange(imputed.shape[0]), imputed=imputed.numpy(), truth=truth.numpy(),
             was_missing=was_missing.numpy())
    atomic_write_bytes(path, buffer.getvalue())
