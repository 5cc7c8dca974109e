"""Training objectives: what a step minimises, as arithmetic on the estimator's terms.

Conventions everywhere in vaelab: ``rec`` is -E_q[log p(x|z)], ``kl`` the KL term, and their sum the
*negative* ELBO, in nats; the functions here return batch totals (:class:`BatchSums`) and the trainer
divides by the batch size. Registered in :data:`OBJECTIVES`:

- ``elbo``: the negative ELBO, the KL in closed form where it exists (``estimator.py``);
- ``beta``: rec + beta * KL (Higgins et al. 2017): beta > 1 trades reconstruction for a more
  factorised code; beta = 1 is the ELBO;
- either with a linear KL warm-up (the KL weight grows from 0 over the first epochs; Bowman et al.
  2016, Sønderby et al. 2016) and free bits (Kingma et al. 2016, eq. 15: each latent dimension's
  batch-mean KL is penalised only above ``free_bits`` nats; a layer whose KL has no closed form per
  dimension gets the floor ``free_bits * D_l`` on the layer as a whole). Both apply to every
  stochastic layer. Both change the objective, so vaelab always *reports* the plain ELBO terms;
- ``iwae``: -IW_K, the importance-weighted bound with K samples (Burda et al. 2016).

To add an objective, subclass :class:`TrainingObjective` and add an entry: the CLI's choices and the
config's validation read the dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelab.bounds.estimator import BoundTerms, bound_terms, log_mean_exp
from vaelab.models.vae import VAE


@dataclass(frozen=True)
class Objective:
    """What one training step minimises: an entry of :data:`OBJECTIVES` with its settings at that step
    (``kl_weight`` already includes any warm-up factor)."""

    kind: str = "elbo"
    kl_weight: float = 1.0
    free_bits: float = 0.0  # nats per latent dimension (batch mean) left unpenalised
    samples: int = 1  # importance samples K per example

    @property
    def entry(self) -> TrainingObjective:
        return OBJECTIVES[self.kind]()


@dataclass(frozen=True)
class BatchSums:
    """Batch totals (scalars): what is minimised, and the plain ELBO terms reported beside it."""

    objective: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor


def penalised_kl(terms: BoundTerms, objective: Objective) -> torch.Tensor:
    """The batch total of the KL an objective pays: every layer weighted, with the free-bits floor
    (sum_d max(lambda, mean_batch KL_d), times the batch size so that it adds up like the other terms;
    max(lambda D_l, mean_batch KL_l) for a layer whose KL is not per dimension)."""
    total = terms.log_px_z.new_zeros(())
    for kl, dims in zip(terms.layer_kl, terms.layer_sizes):
        kl = kl[0]  # [B, D_l] (closed form) or [B] (sampled): the one sample of a training step
        if objective.free_bits > 0:
            batch = kl.shape[0]
            floor = objective.free_bits if kl.dim() > 1 else objective.free_bits * dims
            total = total + kl.mean(0).clamp(min=floor).sum() * batch
        else:
            total = total + kl.sum()
    return objective.kl_weight * total


class TrainingObjective:
    """A registry entry. ``closed_form_kl``: whether the estimator may use closed-form KLs (only for
    objectives that average over z, not for ones that need the importance weights themselves).
    ``uses_kl_schedule``: whether KL warm-up and free bits apply (the config refuses them otherwise).
    ``reads``: the train settings only this objective reads (a new run refuses them changed under another)."""

    closed_form_kl = True
    uses_kl_schedule = True
    reads: tuple[str, ...] = ()

    def samples(self, iwae_samples: int) -> int:
        """Importance samples per example this objective draws."""
        return 1

    def sums(self, terms: BoundTerms, objective: Objective) -> BatchSums:
        raise NotImplementedError


class NegativeElbo(TrainingObjective):
    """rec + kl_weight * KL: the negative ELBO at weight 1 (``elbo``), beta-VAE's objective at beta."""

    def sums(self, terms: BoundTerms, objective: Objective) -> BatchSums:
        rec = -terms.log_px_z[0].sum()
        kl = terms.kl[0].sum()
        return BatchSums(rec + penalised_kl(terms, objective), rec, kl)


class NegativeIwae(TrainingObjective):
    """-IW_K, the importance-weighted bound of Burda et al. 2016; reports the plain ELBO terms averaged
    over its K samples."""

    closed_form_kl = False
    uses_kl_schedule = False
    reads = ("iwae_samples",)

    def samples(self, iwae_samples: int) -> int:
        return iwae_samples

    def sums(self, terms: BoundTerms, objective: Objective) -> BatchSums:
        iw = log_mean_exp(terms.log_weights)  # [B]
        return BatchSums(-iw.sum(), -terms.log_px_z.mean(0).sum(), terms.kl.mean(0).sum())


OBJECTIVES: dict[str, type[TrainingObjective]] = {
    "elbo": NegativeElbo,
    "beta": NegativeElbo,
    "iwae": NegativeIwae,
}


def objective_sums(model: VAE, x: torch.Tensor, c: torch.Tensor | None, eps: torch.Tensor, objective: Objective) -> BatchSums:
    """Batch totals of ``objective`` for ``x: [B, ...]`` with the noise ``eps: [K, B, latent_size]``
    (drawn by the caller, so that a distributed step gives each process its rows of one draw)."""
    entry = objective.entry
    return entry.sums(bound_terms(model, x, c, eps, entry.closed_form_kl), objective)
