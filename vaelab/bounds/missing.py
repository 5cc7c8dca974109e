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

KL warm-up and beta weight the z-KL exactly as in ``objectives.py``; free bits and the IWAE bound
are not defined for these bounds (the config refuses them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaelab.models.vae import VAE
from vaelab.bounds.objectives import BatchSums, Objective, diagonal_gaussian_kl


def elbo_per_example(
    model: VAE, x: torch.Tensor, condition: torch.Tensor | None, eps: torch.Tensor, kl_weight: float = 1.0,
    features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective, rec, kl), each ``[B]``: objective = rec + kl_weight * kl, one sample ``eps: [B, D]``;
    ``features`` are :meth:`VAE.encoder_features` of x if already computed."""
    loc, scale = model.posterior_params(x, condition, features)
    rec = -model.likelihood(loc + scale * eps, condition).log_prob(x)
    kl = diagonal_gaussian_kl(loc, scale, model.prior_loc, model.prior_scale).sum(-1)
    return rec + kl_weight * kl, rec, kl


def unlabelled_terms(
    model: VAE, x: torch.Tensor, eps: torch.Tensor, kl_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(-U(x), E_q(y|x)[rec], E_q(y|x)[kl]), each ``[B]``, summing over every class exactly.

    All classes go through the networks as one ``[n_classes * B]`` batch with the same noise ``eps``;
    the encoder's layers before y joins run once per example.
    """
    n_classes, batch = model.condition_dim, x.shape[0]
    features = model.encoder_features(x)  # [B, F]
    log_q_y = F.log_softmax(model.classify(x, features), dim=-1)  # [B, Y]
    q_y = log_q_y.exp()
    one_hot = torch.eye(n_classes, dtype=x.dtype, device=x.device).repeat_interleave(batch, dim=0)  # [Y*B, Y]
    repeated = x.repeat(n_classes, *([1] * (x.dim() - 1)))
    objective, rec, kl = (
        t.reshape(n_classes, batch).T  # [B, Y]
        for t in elbo_per_example(model, repeated, one_hot, eps.repeat(n_classes, 1), kl_weight,
                                  features.repeat(n_classes, 1))
    )
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
    eps = eps[0]
    labelled = y >= 0
    bound_rows = torch.ones_like(labelled) if classify_only is None else ~classify_only
    classified = labelled if classify_only is None else labelled & classify_only
    total = rec_total = kl_total = x.new_zeros(())
    if classified.any():
        total = label_weight * F.cross_entropy(model.classify(x[classified]), y[classified], reduction="sum")
    with_label = labelled & bound_rows
    if with_label.any():
        xl, yl = x[with_label], y[with_label]
        one_hot = F.one_hot(yl, model.condition_dim).to(x.dtype)
        objective_l, rec, kl = elbo_per_example(model, xl, one_hot, eps[with_label], objective.kl_weight)
        total = total + objective_l.sum() + math.log(model.condition_dim) * xl.shape[0]
        rec_total, kl_total = rec.sum(), kl.sum()
    without_label = ~labelled & bound_rows
    if without_label.any():
        negative_u, rec, kl = unlabelled_terms(model, x[without_label], eps[without_label], objective.kl_weight)
        total = total + negative_u.sum()
        rec_total, kl_total = rec_total + rec.sum(), kl_total + kl.sum()
    return BatchSums(total, rec_total, kl_total)


def covariate_sums(
    model: VAE, x: torch.Tensor, c: torch.Tensor, eps: torch.Tensor, objective: Objective, regression_weight: float = 0.0
) -> BatchSums:
    """Batch totals of the bound on -log p(x|c_observed) for ``c: [B, K]`` (NaN = missing).

    ``eps: [1, B, D + K]``: the first D columns draw z, the last K the missing covariates.
    ``regression_weight`` multiplies -log q(c_j|x) of every observed entry, with q reading x alone
    (every covariate masked): the counterpart of M2's classification term, which trains q on the
    values that are known to predict those that are not.
    """
    latent_dim = model.latent_dim
    eps_z, eps_c = eps[0, :, :latent_dim], eps[0, :, latent_dim:]
    missing = torch.isnan(c)
    q_c = model.covariate_posterior(x, c)
    observed_standard = model.condition_vector(torch.nan_to_num(c))
    completed = torch.where(missing, q_c.loc + q_c.scale * eps_c, observed_standard)  # c~ in standard units
    objective_z, rec, kl_z = elbo_per_example(model, x, completed, eps_z, objective.kl_weight)
    zero, one = torch.zeros_like(q_c.loc), torch.ones_like(q_c.loc)
    kl_c = (diagonal_gaussian_kl(q_c.loc, q_c.scale, zero, one) * missing).sum()
    total = objective_z.sum() + kl_c
    if regression_weight > 0:
        q_blind = model.covariate_posterior(x, torch.full_like(c, float("nan")))
        log_q = q_blind.log_prob(observed_standard)
        total = total - regression_weight * (log_q * ~missing).sum()
    return BatchSums(total, rec.sum(), kl_z.sum() + kl_c)
