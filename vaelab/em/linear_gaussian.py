"""The linear-Gaussian latent-variable model: a model whose evidence and posterior are exact.

    z ~ N(0, I_K),    x | z ~ N(W z + b, Ψ),    Ψ = diag(ψ)

is probabilistic PCA when ψ = σ² 1 and factor analysis when ψ is a free vector (Bishop, PRML
§12.2). Integrating z out gives the marginal (PRML 12.35):

    p(x) = N(x; b, C),    C = W Wᵀ + Ψ,

and Bayes' rule gives the posterior (PRML 12.42 for PPCA, 12.66-12.68 for factor analysis):

    p(z | x) = N(z; M⁻¹ Wᵀ Ψ⁻¹ (x − b), M⁻¹),    M = I + Wᵀ Ψ⁻¹ W.

The class exposes the same three distributions as a VAE — ``prior`` p(z), ``decode(z)`` p(x|z)
and ``posterior(x)`` in the role of the encoder's q(z|x) — so ELBO and importance-weighted code
written for VAEs runs on it unchanged, and can be checked against ``log_evidence``, which is
exact. :func:`analytic_elbo` is the ELBO of any Gaussian q in closed form (Kingma & Welling 2014,
eq. 3 with both terms integrated analytically), which the EM code in :mod:`vaelab.em.fit` records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class LinearGaussianModel:
    """Parameters of z ~ N(0, I_K), x | z ~ N(W z + b, diag(ψ)); use float64 for exact checks."""

    weight: Tensor  # W: [D, K], the loading (factor) matrix
    bias: Tensor  # b: [D], the mean of x
    noise: Tensor  # ψ: [D] per-dimension noise variances (factor analysis) or [] one σ² (PPCA)

    def __post_init__(self) -> None:
        if self.weight.dim() != 2:
            raise VaelabError(f"weight must be [D, K], got shape {list(self.weight.shape)}")
        if self.bias.shape != (self.dim,):
            raise VaelabError(f"bias must be [{self.dim}], got shape {list(self.bias.shape)}")
        if self.noise.shape not in {(), (self.dim,)}:
            raise VaelabError(
                f"noise must be [] or [{self.dim}], got shape {list(self.noise.shape)}"
            )
        if not bool((self.noise > 0).all()):
            raise VaelabError("noise variances must be positive")

    @property
    def dim(self) -> int:
        """D, the dimension of x."""
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        """K, the dimension of z."""
        return self.weight.shape[1]

    @property
    def psi(self) -> Tensor:
        """ψ: [D], the diagonal of Ψ whether the model was given one σ² or a vector."""
        return self.noise.expand(self.dim)

    @property
    def prior(self) -> Independent:
        """p(z) = N(0, I_K), event shape [K]."""
        zeros = self.weight.new_zeros(self.latent_dim)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def decode(self, z: Tensor) -> Independent:
        """p(x | z) = N(W z + b, Ψ) for z: [N, K]; batch [N], event [D]."""
        loc = z @ self.weight.T + self.bias  # [N, D]
        return Independent(Normal(loc, self.psi.sqrt().expand_as(loc)), 1)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W Wᵀ + Ψ) (PRML 12.35-12.36), event [D]."""
        covariance = self.weight @ self.weight.T + torch.diag(self.psi)  # C: [D, D]
        return MultivariateNormal(self.bias, covariance_matrix=covariance)

    def log_evidence(self, x: Tensor) -> Tensor:
        """Exact log p(x) for x: [N, D] -> [N]; the target every ELBO must stay below."""
        return self.marginal().log_prob(x)

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """Exact p(z | x) = N(M⁻¹ Wᵀ Ψ⁻¹ (x − b), M⁻¹), M = I + Wᵀ Ψ⁻¹ W; batch [N], event [K].

        M is the posterior precision (PRML 12.68 calls M⁻¹ G); it does not depend on x, so one
        [K, K] matrix is shared by the whole batch.
        """
        w_over_psi = self.weight / self.psi[:, None]  # Ψ⁻¹ W: [D, K]
        precision = torch.eye(self.latent_dim, dtype=self.weight.dtype) + self.weight.T @ w_over_psi
        projected = (x - self.bias) @ w_over_psi  # (x − b)ᵀ Ψ⁻¹ W: [N, K]
        mean = torch.linalg.solve(precision, projected.T).T  # M⁻¹ Wᵀ Ψ⁻¹ (x − b): [N, K]
        return MultivariateNormal(mean, precision_matrix=precision)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples x: [n, D]: draw z from the prior, then x from p(x | z)."""
        z = torch.randn(n, self.latent_dim, dtype=self.weight.dtype, generator=generator)
        eps = torch.randn(n, self.dim, dtype=self.weight.dtype, generator=generator)
        return z @ self.weight.T + self.bias + self.psi.sqrt() * eps


def analytic_elbo(model: LinearGaussianModel, x: Tensor, q: MultivariateNormal) -> Tensor:
    """ELBO(q) = E_q[log p(x | z)] + E_q[log p(z)] + H(q), in closed form, for x: [N, D] -> [N].

    For q(z) = N(m, S) every term is a Gaussian expectation of a quadratic:
        E_q[log p(x|z)] = −½ Σ_d [log 2πψ_d + ((x − W m − b)_d² + (W S Wᵀ)_dd) / ψ_d]
        E_q[log p(z)]   = −½ [K log 2π + ‖m‖² + tr S]
    so the bound is exact (no sampling); it equals log p(x) iff q is the exact posterior
    (PRML 9.70: log p(x) = ELBO(q) + KL(q ‖ p(z|x))).
    """
    psi = model.psi  # [D]
    m, s = q.mean, q.covariance_matrix  # [N, K], [N, K, K]
    residual = x - m @ model.weight.T - model.bias  # [N, D]
    spread = torch.einsum("dk,nkl,dl->nd", model.weight, s, model.weight)  # diag(W S Wᵀ): [N, D]
    expected_log_lik = -0.5 * (torch.log(2 * math.pi * psi) + (residual**2 + spread) / psi).sum(-1)
    trace_s = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)  # [N]
    expected_log_prior = -0.5 * (
        model.latent_dim * math.log(2 * math.pi) + (m**2).sum(-1) + trace_s
    )
    return expected_log_lik + expected_log_prior + q.entropy()
