"""Bounds for conditional VAEs whose covariates are missing for part of the data.

Missing covariates are treated as latent variables with an amortised posterior, so every example,
complete or not, contributes a lower bound on its own evidence.

**Discrete labels** (Kingma et al. 2014, "M2", eqs. 6-9). Generative model p(y) p(z) p(x|y, z) with
p(y) uniform over the classes; inference q(y|x) q(z|x, y). With -L(x, y) the negative bound of a
labelled example and -U(x) that of an unlabelled one:

    -L(x, y) = -E_q(z|x,y)[log p(x|y, z)] + KL(q(z|x, y) || p(z)) - log p(y)
    -U(x)    = sum_y q(y|x) (-L(x, y)) - H(q(y|x))

The sum over y is computed exactly, by running every unlabelled example through the networks once
per class. Because -U does not train q(y|x) on the labels, Kingma et al. add a classification loss
alpha * E_labelled[-log q(y|x)] with alpha = 0.1 N; vaelab adds it per labelled example with weight
``alpha * N / N_labelled`` (``TrainConfig.alpha``, default 0.1), Kingma's alpha written per
example (Pyro's SS-VAE tutorial uses 46 per labelled example for 100 labels on MNIST). The trainer
(``epoch.py``) also puts a batch of labelled examples into every step, as M2 implementations
commonly do, so that a few labels keep training q(y|x) throughout. That batch adds only the
classification term: the bound still counts every example once per epoch, as in Kingma's J^alpha.
Adding the labelled batch's bound too would weigh the few labelled images N / N_labelled times
more than the rest in p(x|y, z); on Fashion-MNIST with 100 labels that left q(y|x) worse than the
same network trained on the labels alone (BENCHMARKS.md).

By default (``ModelConfig.classifier = "shared"``) q(y|x) is a softmax layer on the encoder's hidden
layers, and y joins q(z|x, y) after them: the layers that read x are trained by the bound of every
example, labelled or not, as well as by the labels (Berkhahn et al. 2019 share them the same way).
``"separate"`` gives q(y|x) a network of its own, as in Kingma et al.

**Continuous covariates** (Ramchandran et al. 2022). The covariates c are given the prior N(0, I) in
standard units (training mean and standard deviation), independent of z; the missing entries c_m of
an example are inferred by q(c_m|x, c_o) = N(mu, diag sigma^2), an encoder reading x, the observed
values and the mask. With c~ = (c_o, c_m ~ q) drawn by reparameterisation:

    -log p(x|c_o) <= -E_q[log p(x|z, c~)] + KL(q(z|x, c~) || p(z)) + KL(q(c_m|x, c_o) || N(0, I))

Ramchandran et al. place a Gaussian-process prior over z across related examples (longitudinal
data); vaelab's examples are independent, so its prior on z is N(0, I), and it bounds log p(x|c_o)
rather than log p(x, c_o) (they differ by log p(c_o), which has no parameters to train).

The bound alone trains q(c_m|x, c_o) only through the decoder's use of c, which is weak when z can
carry the same information. As M2 does for labels, vaelab adds alpha * N K / N_observed times
-log q(c_j|x) for every observed entry (q reading x with every covariate masked), so that the
observed values teach q to predict the missing ones; ``--alpha 0`` gives the bound alone.

Both bounds are built on the estimator (``estimator.py``, K = 1, KL in closed form). KL warm-up and
beta weight the z-KL exactly as in ``objectives.py``; free bits and the IWAE bound are not defined
for these bounds (the config refuses them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vaelab.bounds.estimator import bound_terms
from vaelab.bounds.objectives import BatchSums, Objective
from vaelab.models.vae import VAE


def weighted_elbo(
    model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor, kl_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rec + kl_weight * kl, rec, kl) of one sample ``eps: [1, ..., latent_size]``, each shaped like
    q's batch (the estimator's K = 1 terms, KL in closed form)."""
    terms = bound_terms(model, x, c, eps, closed_form_kl=True)
    rec, kl = -terms.log_px_z[0], terms.kl[0]
    return rec + kl_weight * kl, rec, kl


def unlabelled_terms(
    model: VAE, x: torch.Tensor, eps: torch.Tensor, kl_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(-U(x), E_q(y|x)[rec], E_q(y|x)[kl]), each ``[B]``, summing over every class exactly.

    Every class is encoded at once, as a condition ``[Y, B, Y]`` that broadcasts against the batch,
    with the same noise ``eps: [1, B, D]``; inside ``sharing_features`` the encoder reads x once.
    """
    n_classes, batch = model.condition_dim, x.shape[0]
    with model.sharing_features(x):
        log_q_y = F.log_softmax(model.classify(x).logits, dim=-1)  # [B, Y]
        one_hot = torch.eye(n_classes, dtype=model.dtype, device=x.device)[:, None, :].expand(n_classes, batch, n_classes)
        objective, rec, kl = (t.T for t in weighted_elbo(model, x, one_hot, eps[:, None], kl_weight))  # [B, Y]
    q_y = log_q_y.exp()
    log_prior_y = -math.log(n_classes)
    entropy = -(q_y * log_q_y).sum(-1)
    negative_u = (q_y * (objective - log_prior_y)).sum(-1) - entropy
    return negative_u, (q_y * rec).sum(-1), (q_y * kl).sum(-1)


def label_sums(
    model: VAE, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, objective: Objective, label_weight: float,
    classify_only: torch.Tensor | None = None,
) -> BatchSums:
    """Batch totals of the M2 objective for labels ``y: [B]`` (-1 where hidden), noise ``eps: [1, B, D]``.

    Rows marked in ``classify_only: [B]`` (the trainer's extra labelled batch) contribute only the
    classification term ``label_weight`` * -log q(y|x); the other rows contribute their bound, -L(x, y)
    when labelled and -U(x) when not (and the classification term too when ``classify_only`` is None).
    The reported rec and kl are those of the bound rows: -L's for labelled, q(y|x)-expectations for the rest.
    """
    labelled = y >= 0
    bound_rows = torch.ones_like(labelled) if classify_only is None else ~classify_only
    classified = labelled if classify_only is None else labelled & classify_only
    total = rec_total = kl_total = x.new_zeros(())
    if classified.any():
        total = -label_weight * model.classify(x[classified]).log_prob(y[classified]).sum()
    with_label = labelled & bound_rows
    if with_label.any():
        objective_l, rec, kl = weighted_elbo(model, x[with_label], y[with_label], eps[:, with_label], objective.kl_weight)
        total = total + objective_l.sum() + math.log(model.condition_dim) * rec.shape[0]
        rec_total, kl_total = rec.sum(), kl.sum()
    without_label = ~labelled & bound_rows
    if without_label.any():
        negative_u, rec, kl = unlabelled_terms(model, x[without_label], eps[:, without_label], objective.kl_weight)
        total = total + negative_u.sum()
        rec_total, kl_total = rec_total + rec.sum(), kl_total + kl.sum()
    return BatchSums(total, rec_total, kl_total)


def covariate_sums(
    model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor, objective: Objective, regression_weight: float = 0.0
) -> BatchSums:
    """Batch totals of the bound on -log p(x|c_observed) for ``c: [B, K]`` (NaN = missing).

    ``eps: [1, B, latent_size + K]``: the first columns draw z, the last K the missing covariates.
    ``regression_weight`` multiplies -log q(c_j|x) of every observed entry, with q reading x alone
    (every covariate masked): the counterpart of M2's classification term, which trains q on the
    values that are known to predict those that are not.
    """
    eps_z, eps_c = eps[..., : model.latent_size], eps[0, :, model.latent_size :]
    missing = torch.isnan(c)
    q_c = model.covariate_posterior(x, c)  # standard units
    observed_standard = model.condition_vector(torch.nan_to_num(c))
    completed = torch.where(missing, q_c.loc + q_c.scale * eps_c, observed_standard)  # c~ in standard units
    c_completed = completed * model.covariate_std + model.covariate_mean  # back to the data's units
    objective_z, rec, kl_z = weighted_elbo(model, x, c_completed, eps_z, objective.kl_weight)
    kl_c = (kl_divergence(q_c, Normal(torch.zeros_like(q_c.loc), torch.ones_like(q_c.loc))) * missing).sum()
    total = objective_z.sum() + kl_c
    if regression_weight > 0:
        q_blind = model.covariate_posterior(x, torch.full_like(c, float("nan")))
        log_q = q_blind.log_prob(observed_standard)
        total = total - regression_weight * (log_q * ~missing).sum()
    return BatchSums(total, rec.sum(), kl_z.sum() + kl_c)
