"""Expectation-Maximisation with exact E-steps: Gaussian mixtures and factor analysis / PPCA.

EM maximises log p(x | θ) through the decomposition (Bishop, PRML 9.70)

    log p(x | θ) = ELBO(q, θ) + KL(q ‖ p(z | x, θ)),
    ELBO(q, θ)   = E_q[log p(x, z | θ)] + H(q).

The E-step sets q to the exact posterior p(z | x, θ_t), so the KL term vanishes and the ELBO
touches the log-likelihood; the M-step maximises the ELBO over θ with q fixed, in closed form.
Neither step can lower log p(x | θ) (PRML §9.4). A VAE keeps the same bound but can do neither
step exactly (its amortised q is not the posterior, and θ takes gradient steps), which is why
the gap between the two numbers recorded here is zero and a VAE's is not.

Each iteration records the mean log-likelihood of θ_t and the mean ELBO of the q that the
E-step just computed from θ_t; the two are computed by different formulas, so their equality is a
check, not a tautology.

Models (all tensors float64, all steps vectorised over examples):
    gmm  Gaussian mixture, ``covariance="full" | "diag"`` (PRML §9.2.2, eqs. 9.23-9.27).
    fa   factor analysis, ``noise="diag"``, or probabilistic PCA, ``noise="isotropic"``
         (PRML §12.2.4, eqs. 12.66-12.70; Ghahramani & Hinton 1996).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

from vaelab.errors import VaelabError
from vaelab.em.linear_gaussian import LinearGaussianModel, analytic_elbo

COVARIANCE_TYPES = ("full", "diag")
NOISE_TYPES = ("diag", "isotropic")


def _history_entry(iteration: int, log_lik: Tensor, elbo: Tensor) -> dict[str, float]:
    """One row of ``history``: means over examples, in nats, for θ_t and q_t = p(z | x, θ_t)."""
    return {
        "iteration": iteration,
        "log_likelihood": log_lik.mean().item(),
        "elbo": elbo.mean().item(),
    }


@dataclass(frozen=True)
class GaussianMixture:
    """A fitted (or initial) mixture p(x) = Σ_k π_k N(x; μ_k, Σ_k) and the record of its fit.

    ``covariances`` is [K, D, D] for full covariances and [K, D] (the variances) for diagonal
    ones; the covariance type is read off its shape. ``history`` and ``converged`` describe a fit
    and are not parameters: :meth:`to_tensors` leaves them out.
    """

    weights: Tensor  # π: [K], mixing proportions, sum to 1
    means: Tensor  # μ: [K, D]
    covariances: Tensor  # Σ: [K, D, D] (full) or [K, D] (diag)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per E-step
    converged: bool = False  # log-likelihood change fell below tol before max_iter

    def __post_init__(self) -> None:
        if self.means.dim() != 2:
            raise VaelabError(f"means must be [K, D], got shape {list(self.means.shape)}")
        k, d = self.means.shape
        if self.weights.shape != (k,):
            raise VaelabError(f"weights must be [{k}], got shape {list(self.weights.shape)}")
        if self.covariances.shape not in {(k, d, d), (k, d)}:
            shape = list(self.covariances.shape)
            raise VaelabError(f"covariances must be [{k}, {d}, {d}] or [{k}, {d}], got {shape}")

    @property
    def covariance_type(self) -> str:
        """Either "full" or "diag", read off the shape of ``covariances``."""
        return "full" if self.covariances.dim() == 3 else "diag"

    def component_distribution(self) -> MultivariateNormal | Independent:
        """The K Gaussians N(μ_k, Σ_k) as one distribution with batch [K], event [D]."""
        if self.covariance_type == "full":
            return MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return Independent(Normal(self.means, self.covariances.sqrt()), 1)

    def log_joint(self, x: Tensor) -> Tensor:
        """log p(x_n, z_n = k) = log π_k + log N(x_n; μ_k, Σ_k) for x: [N, D] -> [N, K]."""
        return self.weights.log() + self.component_distribution().log_prob(x[:, None, :])

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x_n) = logsumexp_k log p(x_n, z_n = k) (PRML 9.14) for x: [N, D] -> [N]."""
        return torch.logsumexp(self.log_joint(x), dim=1)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Responsibilities γ(z_nk) = p(z_n = k | x_n) (PRML 9.23) for x: [N, D] -> [N, K]."""
        return torch.softmax(self.log_joint(x), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples x: [n, D]: draw a component k ~ π, then x ~ N(μ_k, Σ_k)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # [n]
        eps = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, generator=generator)
        if self.covariance_type == "full":
            scale_tril = torch.linalg.cholesky(self.covariances)  # [K, D, D]
            return self.means[k] + (scale_tril[k] @ eps[:, :, None]).squeeze(-1)
        return self.means[k] + self.covariances[k].sqrt() * eps

    def to_tensors(self) -> dict[str, Tensor]:
        """The parameters as named tensors, ready for ``safetensors.torch.save_file``."""
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> GaussianMixture:
        """Rebuild from :meth:`to_tensors` output (e.g. ``safetensors.torch.load_file``)."""
        return cls(
            weights=tensors["weights"], means=tensors["means"], covariances=tensors["covariances"]
        )


@dataclass(frozen=True)
class FactorAnalysis:
    """A fitted (or initial) factor-analysis / PPCA model and the record of its fit.

    The model is :class:`~vaelab.em.linear_gaussian.LinearGaussianModel`; this class adds the fit
    record and delegates every density and sample to it, so the likelihood is written once.
    """

    weight: Tensor  # W: [D, K]
    bias: Tensor  # b: [D], the data mean after fitting
    noise: Tensor  # ψ: [D], noise variances (all equal for noise="isotropic")
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per E-step
    converged: bool = False  # log-likelihood change fell below tol before max_iter

    def __post_init__(self) -> None:
        self.as_linear_gaussian()  # validates the shapes and positivity of ψ

    def as_linear_gaussian(self) -> LinearGaussianModel:
        """The fitted parameters as the exact latent-variable model (prior, decode, posterior)."""
        return LinearGaussianModel(weight=self.weight, bias=self.bias, noise=self.noise)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Exact log p(x_n) = log N(x_n; b, W Wᵀ + Ψ) for x: [N, D] -> [N]."""
        return self.as_linear_gaussian().log_evidence(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples x: [n, D]."""
        return self.as_linear_gaussian().sample(n, generator=generator)

    def to_tensors(self) -> dict[str, Tensor]:
        """The parameters as named tensors, ready for ``safetensors.torch.save_file``."""
        return {"weight": self.weight, "bias": self.bias, "noise": self.noise}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> FactorAnalysis:
        """Rebuild from :meth:`to_tensors` output (e.g. ``safetensors.torch.load_file``)."""
        return cls(weight=tensors["weight"], bias=tensors["bias"], noise=tensors["noise"])


Model = TypeVar("Model", GaussianMixture, FactorAnalysis)
EMResult = GaussianMixture | FactorAnalysis


def _run_em(
    x: Tensor,
    model: Model,
    e_step: Callable[[Model, Tensor], tuple[Any, Tensor, Tensor]],
    m_step: Callable[[Tensor, Any], Model],
    max_iter: int,
    tol: float,
) -> Model:
    """The EM loop shared by every model (PRML §9.4).

    ``e_step(model, x)`` returns (q, log p(x_n | θ): [N], ELBO_n(q, θ): [N]); ``m_step(x, q)``
    returns the new model. Iteration t is the t-th M-step followed by the E-step at its result,
    so ``max_iter`` M-steps are taken at most and every parameter set visited is recorded,
    including the initial one (iteration 0) and the returned one (the last entry).
    """
    q, log_lik, elbo = e_step(model, x)
    history = [_history_entry(0, log_lik, elbo)]
    converged = False
    for iteration in range(1, max_iter + 1):
        model = m_step(x, q)
        q, log_lik, elbo = e_step(model, x)
        history.append(_history_entry(iteration, log_lik, elbo))
        if abs(history[-1]["log_likelihood"] - history[-2]["log_likelihood"]) < tol:
            converged = True
            break
    return replace(model, history=history, converged=converged)


# --- Gaussian mixture ------------------------------------------------------------------------


def _gmm_e_step(model: GaussianMixture, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Responsibilities γ_nk ∝ π_k N(x_n; μ_k, Σ_k) by log-sum-exp (PRML 9.23).

    The ELBO of q(z_n = k) = γ_nk is Σ_k γ_nk log p(x_n, k) + H(γ_n) (PRML 9.71-9.72).
    """
    log_joint = model.log_joint(x)  # [N, K]
    log_lik = torch.logsumexp(log_joint, dim=1)  # [N]
    resp = torch.exp(log_joint - log_lik[:, None])  # γ: [N, K]
    elbo = (resp * log_joint).sum(1) + torch.special.entr(resp).sum(1)  # [N]
    return resp, log_lik, elbo


def _gmm_m_step(x: Tensor, resp: Tensor, covariance: str, reg_covar: float) -> GaussianMixture:
    """Closed-form maximisers of the ELBO for fixed responsibilities (PRML 9.24-9.27).

    ``reg_covar`` is added to every variance, as in scikit-learn, so a component that collapses
    onto few points keeps an invertible covariance. The 10·eps added to N_k is scikit-learn's
    guard against a component with no responsibility at all.
    """
    n, d = x.shape
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # N_k: [K]
    means = resp.T @ x / nk[:, None]  # μ_k = Σ_n γ_nk x_n / N_k: [K, D]
    diff = x[None, :, :] - means[:, None, :]  # x_n − μ_k: [K, N, D]
    if covariance == "full":
        weighted = resp.T[:, :, None] * diff  # [K, N, D]
        covariances = weighted.transpose(1, 2) @ diff / nk[:, None, None]  # [K, D, D]
        covariances = covariances + reg_covar * torch.eye(d, dtype=x.dtype)
    else:
        covariances = (resp.T[:, :, None] * diff**2).sum(1) / nk[:, None] + reg_covar  # [K, D]
    return GaussianMixture(weights=nk / n, means=means, covariances=covariances)


def _kmeans_plus_plus(x: Tensor, components: int, generator: torch.Generator | None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each centre drawn ∝ squared distance."""
    first = torch.randint(x.shape[0], (1,), generator=generator)
    centres = x[first]  # [1, D]
    for _ in range(components - 1):
        sq_dist = torch.cdist(x, centres).min(dim=1).values ** 2  # [N]
        if not bool((sq_dist > 0).any()):
            raise VaelabError(f"data has fewer than {components} distinct points")
        pick = torch.multinomial(sq_dist, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
    return centres  # [K, D]


def fit_gmm(
    x: Tensor,
    components: int,
    *,
    covariance: str = "full",
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-3,
    init: GaussianMixture | None = None,
    generator: torch.Generator | None = None,
) -> GaussianMixture:
    """Fit a K-component Gaussian mixture to x: [N, D] by EM; call through :func:`fit_em`.

    Without ``init`` the start is scikit-learn's ``init_params="k-means++"`` scheme: k-means++
    centres, every point assigned to its nearest centre, one M-step on those hard assignments.
    With ``init`` (a :class:`GaussianMixture`, e.g. the parameters given to scikit-learn as
    ``weights_init``/``means_init``/``precisions_init``) EM starts exactly there.
    """
    if covariance not in COVARIANCE_TYPES:
        raise VaelabError(
            f"unknown covariance {covariance!r}; expected one of {list(COVARIANCE_TYPES)}"
        )
    if init is None:
        centres = _kmeans_plus_plus(x, components, generator)  # [K, D]
        nearest = torch.cdist(x, centres).argmin(dim=1)  # [N]
        hard_resp = torch.nn.functional.one_hot(nearest, components).to(x.dtype)  # [N, K]
        init = _gmm_m_step(x, hard_resp, covariance, reg_covar)
    elif init.weights.shape[0] != components or init.covariance_type != covariance:
        raise VaelabError(
            f"init has {init.weights.shape[0]} {init.covariance_type} components; "
            f"expected {components} {covariance}"
        )
    init = GaussianMixture(
        weights=init.weights.to(x.dtype),
        means=init.means.to(x.dtype),
        covariances=init.covariances.to(x.dtype),
    )
    m_step = partial(_gmm_m_step, covariance=covariance, reg_covar=reg_covar)
    return _run_em(x, init, _gmm_e_step, m_step, max_iter, tol)


# --- Factor analysis / probabilistic PCA -----------------------------------------------------


def _fa_e_step(model: FactorAnalysis, x: Tensor) -> tuple[MultivariateNormal, Tensor, Tensor]:
    """q(z_n) = p(z_n | x_n), which gives E[z_n] and E[z_n z_nᵀ] (PRML 12.66-12.68)."""
    linear_gaussian = model.as_linear_gaussian()
    q = linear_gaussian.posterior(x)  # batch [N], event [K]
    return q, linear_gaussian.log_evidence(x), analytic_elbo(linear_gaussian, x, q)


def _fa_m_step(x: Tensor, q: MultivariateNormal, noise: str, min_noise: float) -> FactorAnalysis:
    """Closed-form maximisers of the ELBO for fixed q (PRML 12.69-12.70; 12.56-12.57 for PPCA).

        W_new = [Σ_n (x_n − x̄) E[z_n]ᵀ] [Σ_n E[z_n z_nᵀ]]⁻¹
        Ψ_new = diag(S − W_new (1/N) Σ_n E[z_n] (x_n − x̄)ᵀ)

    For PPCA σ²_new is the mean of that diagonal, which is PRML 12.57 rewritten with W_new
    substituted. ψ is floored at ``min_noise`` so a constant feature cannot make Ψ singular.
    """
    n = x.shape[0]
    mean = x.mean(0)  # b = x̄, the maximum-likelihood mean whatever W and Ψ are: [D]
    centred = x - mean  # [N, D]
    ez = q.mean  # E[z_n]: [N, K]
    # Σ_n E[z_n z_nᵀ] = Σ_n (M⁻¹ + E[z_n] E[z_n]ᵀ): [K, K]
    sum_ezz = q.covariance_matrix.sum(0) + ez.T @ ez
    cross = centred.T @ ez  # Σ_n (x_n − x̄) E[z_n]ᵀ: [D, K]
    weight = torch.linalg.solve(sum_ezz, cross.T).T  # cross · sum_ezz⁻¹ (symmetric): [D, K]
    psi = (centred**2).mean(0) - (weight * cross).sum(1) / n  # diag(S − W_new crossᵀ / N): [D]
    if noise == "isotropic":
        psi = psi.mean().expand_as(psi).clone()
    return FactorAnalysis(weight=weight, bias=mean, noise=psi.clamp_min(min_noise))


def fit_factor_analysis(
    x: Tensor,
    components: int,
    *,
    noise: str = "diag",
    min_noise: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-3,
    init: FactorAnalysis | None = None,
    generator: torch.Generator | None = None,
) -> FactorAnalysis:
    """Fit factor analysis (``noise="diag"``) or PPCA (``noise="isotropic"``) with K factors by EM.

    Call through :func:`fit_em`. The default start is W with N(0, s²/K) entries, s² the mean
    data variance, and ψ the data variances. ``init`` supplies W and ψ instead; b is always the
    data mean x̄, its maximum-likelihood value (PRML §12.2.1), which also keeps the E-step's
    E[z_n] centred so that fixing b and updating W, ψ is an exact M-step.
    """
    if noise not in NOISE_TYPES:
        raise VaelabError(f"unknown noise {noise!r}; expected one of {list(NOISE_TYPES)}")
    mean, variances = x.mean(0), x.var(0, correction=0)  # [D], [D]
    if init is None:
        scale = math.sqrt(variances.mean().item() / components)
        weight = scale * torch.randn(x.shape[1], components, dtype=x.dtype, generator=generator)
        psi = variances.clamp_min(min_noise)
        if noise == "isotropic":
            psi = psi.mean().expand_as(psi).clone()
        init = FactorAnalysis(weight=weight, bias=mean, noise=psi)
    elif init.weight.shape != (x.shape[1], components):
        raise VaelabError(
            f"init weight must be [{x.shape[1]}, {components}], got {list(init.weight.shape)}"
        )
    init = FactorAnalysis(
        weight=init.weight.to(x.dtype), bias=mean, noise=init.noise.to(x.dtype).expand_as(mean)
    )
    m_step = partial(_fa_m_step, noise=noise, min_noise=min_noise)
    return _run_em(x, init, _fa_e_step, m_step, max_iter, tol)


EM_MODELS: dict[str, Callable[..., EMResult]] = {"gmm": fit_gmm, "fa": fit_factor_analysis}


def fit_em(x: Tensor | Any, model: str, components: int, **options: Any) -> EMResult:
    """Fit ``EM_MODELS[model]`` with K = ``components`` to x: [N, D] (any array-like), in float64.

    ``options`` go to the model's fit function: ``covariance``, ``reg_covar`` for "gmm";
    ``noise``, ``min_noise`` for "fa"; ``max_iter``, ``tol``, ``init``, ``generator`` for both.
    ``tol`` is on the change of the mean log-likelihood in nats, as in scikit-learn's
    ``GaussianMixture``. ``max_iter=0`` returns the evaluated initial model.
    """
    if model not in EM_MODELS:
        raise VaelabError(f"unknown EM model {model!r}; expected one of {sorted(EM_MODELS)}")
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2:
        raise VaelabError(f"data must be [N, D], got shape {list(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise VaelabError("data contains NaN or infinite values")
    if not 1 <= components <= x.shape[0]:
        raise VaelabError(f"components must be between 1 and N={x.shape[0]}, got {components}")
    return EM_MODELS[model](x, components, **options)
