"""The variational autoencoder: encoder q(z|x), prior p(z) and decoder p(x|z), composed.

Kingma & Welling (2014): an encoder network gives a diagonal Gaussian q_phi(z|x); z is drawn with the
reparameterisation z = mu + sigma * eps, eps ~ N(0, I); a decoder network gives p_theta(x|z); the
prior is p(z) = N(0, I). Everything downstream (objectives, evaluation, plots, the CLI) talks to a
model only through :meth:`VAE.encode`, :meth:`VAE.decode` and :attr:`VAE.prior`, which return
``torch.distributions.Distribution`` objects:

- ``encode(x)``: batch shape ``[B]``, event ``[latent_dim]``;
- ``decode(z)``: batch shape ``z.shape[:-1]``, event = the data shape; ``log_prob(x)`` is ``[B]``;
- ``prior``: batch shape ``[]``, event ``[latent_dim]``, so ``kl_divergence(encode(x), prior)`` is ``[B]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelab.config import ModelConfig
from vaelab.likelihoods import make_likelihood
from vaelab.networks import build_networks

_MIN_SCALE = 1e-5  # floor on q's standard deviation: keeps log sigma finite in the KL


class VAE(nn.Module):
    """A VAE with a Gaussian encoder, a standard normal prior and the configured likelihood."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.input_shape is not None, "set config.input_shape (done by vaelab.train from the data)"
        self.config = config
        self.encoder_net, self.decoder_net = build_networks(config)
        self.event_ndims = len(config.input_shape)
        if config.likelihood == "gaussian" and config.gaussian_scale is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))  # one learned sigma shared by all dimensions
        # The prior's parameters are buffers so that ``prior`` follows ``.to(device)``; not saved.
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(config.latent_dim), persistent=False)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def prior(self) -> Distribution:
        """p(z) = N(0, I), event ``[latent_dim]``."""
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = N(mu(x), diag sigma(x)^2), batch shape ``x.shape[:-len(input_shape)]``."""
        loc, scale = self.posterior_params(x)
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def posterior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of q(z|x), each ``[B, latent_dim]``; sigma = softplus(.) cannot overflow as exp(log-variance) can."""
        loc, raw_scale = self.encoder_net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + _MIN_SCALE

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for every z in ``z: [..., latent_dim]``; batch shape ``z.shape[:-1]``."""
        params = self.decoder_net(z)
        return make_likelihood(self.config.likelihood, params, self.event_ndims, self.observation_scale())

    def observation_scale(self) -> torch.Tensor | None:
        """The Gaussian likelihood's sigma (learned or fixed); None for the other likelihoods."""
        if self.config.likelihood != "gaussian":
            return None
        if self.config.gaussian_scale is not None:
            return self.prior_loc.new_tensor(self.config.gaussian_scale)
        return self.log_sigma.exp()

    @torch.no_grad()
    def initialise_output_bias(self, data_mean: torch.Tensor) -> None:
        """Start p(x|z) at the data's marginal: the decoder's output bias becomes the logit of the mean
        pixel (bernoulli, cbernoulli) or the mean itself (gaussian), as Burda et al.'s IWAE code does.

        The first updates then go to structure rather than to learning the average image; on the
        classic Fashion-MNIST model it is worth about 0.1 nats after 10 epochs (BENCHMARKS.md).
        """
        if self.config.likelihood == "gaussian":
            target = data_mean
        else:
            p = data_mean.clamp(1e-3, 1 - 1e-3)
            target = torch.log(p) - torch.log1p(-p)
        self.decoder_net.set_output_bias(target.to(self.prior_loc))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of p(x|z) for n draws z ~ p(z): ``[n, *input_shape]``, what a picture of samples shows."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.prior_loc.device)
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at z = the mean of q(z|x): ``[B, *input_shape]``."""
        return self.decode(self.encode(x).mean).mean
