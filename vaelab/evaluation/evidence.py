"""Evaluation of a trained model on a data split: the evidence, honestly estimated.

log p(x) is intractable for a VAE; :func:`evaluate` reports the two standard bounds on it:

- the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)), with the reconstruction term averaged over the same
  K samples and the KL in closed form;
- the importance-weighted bound IW_K = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x)
  (Burda et al. 2016), which rises towards log p(x) as K grows; its negative is the NLL that papers
  report (K = 5000 is the literature's standard).

Every figure is computed from the model's public distributions (``encode``, ``decode``, ``prior``),
so evaluation and training describe the same model and the same likelihood. The K samples of a batch
of examples go through the decoder as one ``[K_chunk, B, ...]`` batch; K is processed in chunks with
a running log-sum-exp, so memory is bounded for any K.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Independent, Normal
from tqdm.auto import tqdm

from vaelab import rundir
from vaelab.models.conditions import condition_of, missing_mask
from vaelab.data.datasets import Split
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_json
from vaelab.models.vae import VAE
from vaelab.bounds.objectives import diagonal_gaussian_kl, elbo, reparameterize
from vaelab.data.pipeline import load_data, resolve_device

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: dimension d is active if Cov_x(E_q[z_d]) > 0.01
DEFAULT_MAX_FLOATS = 2**25  # decoder activations per chunk (~128 MB of float32): the memory bound
EXAMPLES_PER_BATCH = 256


@torch.no_grad()
def elbo_averages(
    model: VAE, x: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean negative ELBO (``loss``), reconstruction term (``rec``) and KL (``kl``) over ``x``, in nats.

    One reparameterised z per example, as in training; pass a seeded ``generator`` for figures that
    are comparable across epochs. Conditional models take the condition ``c`` of every example.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        terms = elbo(model, x[start : start + batch_size], generator, None if c is None else c[start : start + batch_size])
        totals += torch.stack((terms.loss.sum(), terms.rec.sum(), terms.kl.sum()))
    model.train(was_training)
    loss, rec, kl = (totals / max(x.shape[0], 1)).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


def _check_complete(model: VAE, c: torch.Tensor) -> None:
    if bool(missing_mask(model.config.condition, c).any()):
        raise VaelabError("evaluation of log p(x|c) needs every covariate observed; this split has missing ones")


def decoder_floats_per_sample(model: VAE) -> int:
    """Floats the decoder produces (every layer's output, summed) for one z: sizes the chunks."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.decoder_net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            condition = model.prior_loc.new_zeros(1, model.condition_dim) if model.conditional else None
            model.decoder_net(model.prior_loc.new_zeros(1, model.latent_dim), condition)
    finally:
        for hook in hooks:
            hook.remove()
    return max(1, sum(sizes))


@torch.no_grad()
def importance_weighted_terms(
    model: VAE, x: torch.Tensor, iw_samples: int, generator: torch.Generator | None, sample_chunk: int,
    c: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example IW_K, E_q[log p(x|z, c)] (over the same K samples) and KL, each ``[B]``.

    Samples are drawn ``sample_chunk`` at a time; IW_K is accumulated with a running log-sum-exp.
    """
    condition = model.condition_vector(c)
    loc, scale = model.posterior_params(x, condition)
    q = Independent(Normal(loc, scale, validate_args=False), 1)
    log_sum_w = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=q.mean.dtype)
    sum_log_px_z = torch.zeros_like(log_sum_w)
    for start in range(0, iw_samples, sample_chunk):
        k = min(sample_chunk, iw_samples - start)
        z = reparameterize(q, generator, samples=k)  # [k, B, D]
        log_px_z = model.likelihood(z, condition).log_prob(x)  # [k, B]
        log_w = log_px_z + model.prior.log_prob(z) - q.log_prob(z)  # [k, B]
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, dim=0))
        sum_log_px_z += log_px_z.sum(0)
    kl = diagonal_gaussian_kl(q.mean, q.stddev, model.prior_loc, model.prior_scale)  # [B, D]
    return {
        "iw": log_sum_w - math.log(iw_samples),
        "log_px_z": sum_log_px_z / iw_samples,
        "kl": kl.sum(-1),
        "kl_per_dim": kl,
        "posterior_mean": q.mean,
    }


@torch.no_grad()
def evaluate(
    model: VAE,
    data: Any,
    iw_samples: int = 5000,
    *,
    seed: int = 0,
    progress: bool = False,
    max_floats: int = DEFAULT_MAX_FLOATS,
    c: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Negative ELBO, IW_K negative log-likelihood, bits/dim, KL, active units of ``model`` on ``data``.

    ``data`` is a tensor ``[N, *input_shape]`` or a dataset split (whose labels or covariates then
    condition a conditional model). Conditional models are scored on log p(x|c), with ``c`` taken
    from the split unless given. Losses are nats per example; ``elbo`` is the *negative* ELBO so
    that lower is better for both it and ``nll``. ``seed`` fixes the importance samples.
    """
    x = getattr(data, "x", data)
    if c is None and model.conditional and isinstance(data, Split):
        c = condition_of(model.config.condition, data)
    if c is not None:
        _check_complete(model, c)
        c = c.to(model.prior_loc.device)
    if iw_samples < 1:
        raise ValueError(f"iw_samples must be >= 1, got {iw_samples}")
    n = x.shape[0]
    assert n > 0, "evaluate needs at least one example"
    device = model.prior_loc.device
    x = x.to(device)
    dims = math.prod(x.shape[1:])
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = min(n, EXAMPLES_PER_BATCH)
    sample_chunk = max(1, min(iw_samples, max_floats // (batch * decoder_floats_per_sample(model))))

    was_training = model.training
    model.eval()
    started = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {}
    with tqdm(total=n, unit="ex", disable=not progress, desc=f"IW_{iw_samples}", dynamic_ncols=True) as bar:
        for begin in range(0, n, batch):
            terms = importance_weighted_terms(
                model, x[begin : begin + batch], iw_samples, generator, sample_chunk, None if c is None else c[begin : begin + batch]
            )
            for key, value in terms.items():
                parts.setdefault(key, []).append(value)
            bar.update(min(batch, n - begin))
    model.train(was_training)
    seconds = time.perf_counter() - started

    terms = {key: torch.cat(values) for key, values in parts.items()}
    nll = -terms["iw"].mean().item()
    reconstruction = -terms["log_px_z"].mean().item()
    kl = terms["kl"].mean().item()
    mean_variance = terms["posterior_mean"].var(dim=0, unbiased=True) if n > 1 else torch.zeros_like(terms["posterior_mean"][0])
    return {
        "elbo": reconstruction + kl,
        "nll": nll,
        "iw_samples": iw_samples,
        "bits_per_dim": nll / (dims * math.log(2)),
        "kl": kl,
        "reconstruction": reconstruction,
        "active_units": int((mean_variance > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": model.latent_dim,
        "conditioned_on": model.config.condition,
        "kl_per_dim": terms["kl_per_dim"].mean(0).tolist(),
        "posterior_mean_variance": mean_variance.tolist(),
        "n": n,
        "seconds": seconds,
    }



def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    iw_samples: int = 5000,
    *,
    limit: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate` on a split of a run's own data pipeline; also saved as ``RUN/evaluation-<split>.json``.

    ``limit`` takes the first N examples of the split in their stored order.
    """
    run = rundir.load(run_dir, device=resolve_device(device))
    dataset = load_data(run.config)
    part = getattr(dataset, split)
    if limit is not None:
        part = Split(*(None if t is None else t[:limit] for t in (part.x, part.y, part.c)))
    if part.x.shape[0] == 0:
        raise VaelabError(f"{run_dir}: the {split} split is empty")
    result = {
        **evaluate(run.model, part, iw_samples, seed=seed, progress=progress),
        "split": split,
        "dataset": run.config.data.dataset,
        "binarize": run.config.data.binarize,
        "seed": seed,
    }
    atomic_write_json(Path(run_dir) / f"evaluation-{split}.json", result)
    return result
