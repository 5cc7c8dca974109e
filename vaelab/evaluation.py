"""Evaluation of a trained model on a data split.

Every figure here is computed from the model's public distributions (``encode``, ``decode``,
``prior``) through the objectives in :mod:`vaelab.objectives`, so evaluation and training describe
the same model and the same likelihood.
"""

from __future__ import annotations

import torch

from vaelab.model import VAE
from vaelab.objectives import elbo


@torch.no_grad()
def elbo_averages(model: VAE, x: torch.Tensor, batch_size: int, generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean negative ELBO (``loss``), reconstruction term (``rec``) and KL (``kl``) over ``x``, in nats.

    One reparameterised z per example, as in training; pass a seeded ``generator`` for figures that
    are comparable across epochs.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        terms = elbo(model, x[start : start + batch_size], generator)
        totals += torch.stack((terms.loss.sum(), terms.rec.sum(), terms.kl.sum()))
    model.train(was_training)
    loss, rec, kl = (totals / max(x.shape[0], 1)).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}
