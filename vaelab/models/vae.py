"""The variational autoencoder: encoder q(z|x, c), prior p(z) and decoder p(x|z, c), composed.

Kingma & Welling (2014): an encoder network gives a diagonal Gaussian q_phi(z|x); z is drawn with the
reparameterisation z = mu + sigma * eps, eps ~ N(0, I); a decoder network gives p_theta(x|z). A
conditional VAE (Sohn et al. 2015) feeds a condition c to both networks (``models/conditions.py``).
With ``stochastic_layers = L > 1`` the model is hierarchical: inference and generation run top-down,
q(z_L|x) prod_l q(z_l|x, z_{l+1}) and p(z_L) prod_l p(z_l|z_{l+1}) p(x|z), wired as
``models/hierarchies.py``'s ``--hierarchy`` says (``ladder``: the Ladder VAE's shared top-down
features; ``hvae``: Tomczak & Welling's HVAE), with the prior of ``models/priors.py`` (standard,
mog:K, vamp:K) on the top layer.

**The model interface** — everything downstream (bounds, evaluation, plots, the explorer, the CLI)
uses only these, and they return ``torch.distributions.Distribution`` objects:

- ``encode(x, c) -> q(z|x, c)``: batch shape ``[B]`` (or the broadcast of x's and c's leading dims),
  event ``[latent_size]``; a hierarchical model's q is a :class:`~vaelab.models.latents.Chain`;
- ``decode(z, c) -> p(x|z, c)``: batch shape ``z.shape[:-1]``, event = the data shape;
- ``prior_for(c) -> p(z)`` (``prior`` when unconditional): event ``[latent_size]``;
- ``classify(x) -> q(y|x)`` and ``covariate_posterior(x, c)`` for models that infer missing c;
- ``device``, ``dtype``, ``latent_size``.

``c`` is given as the data holds it: int64 labels ``[B]`` (or one-hot / probability vectors) or
covariates ``[B, K]`` in their own units. Fast paths sit behind this interface: the Bernoulli
likelihood sums in two fused reductions, and inside :meth:`VAE.sharing_features` the encoder reads
each x once however many conditions it is encoded with (M2 sums over every class).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution

from vaelab.config import ConfigError, ModelConfig
from vaelab.models.conditions import condition_for
from vaelab.models.hierarchies import HIERARCHIES, TopDownPrior, full_precision, gaussian
from vaelab.models.latents import MIN_SCALE, sample
from vaelab.models.likelihoods import build_likelihood, parameter_shape
from vaelab.models.networks import build_decoder, build_encoder
from vaelab.models.priors import build_prior


class VAE(nn.Module):
    """A VAE with Gaussian posteriors, the configured prior, likelihood, condition and depth."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.input_shape is not None, "set config.input_shape (done by vaelab.train from the data)"
        if config.likelihood == "auto":
            raise ConfigError("likelihood", "auto is chosen from the training data by vaelab.train; name a likelihood "
                                            "(e.g. bernoulli) to build a model directly")
        self.config = config
        self.condition = condition_for(config)
        self.condition_dim = self.condition.dim(config)
        self.layers = config.stochastic_layers
        latent = config.latent_dim
        shared_classifier = config.infer_missing and self.condition.is_label and config.classifier == "shared"
        likelihood = build_likelihood(config)
        output_shape = parameter_shape(likelihood, tuple(config.input_shape))
        self.hierarchy = HIERARCHIES[config.hierarchy]
        if self.layers == 1:
            self.encoder_net = build_encoder(config, 2 * latent, self.condition_dim, condition_last=shared_classifier)
            decoder = build_decoder(config, output_shape, self.condition_dim)
        else:
            decoder = self.hierarchy.build(self, config, output_shape, self.condition_dim, shared_classifier)
        self.decoder_net = decoder
        self.likelihood = likelihood  # registered after the decoder: parameter order as in release 0.1
        self.event_ndims = len(config.input_shape)
        self.prior_module = build_prior(config.prior, latent, tuple(config.input_shape))
        if self.conditional and self.prior_module.reads_encoder:
            raise ConfigError("prior", f"{config.prior} mixes the encoder's q(z|u) at pseudo-inputs u, which take no "
                                       "condition: use it with --condition none")
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(): device and dtype
        self._features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.condition.add_modules(self)

    # --- the interface ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def latent_dim(self) -> int:
        """Dimensions of each stochastic layer."""
        return self.config.latent_dim

    @property
    def latent_size(self) -> int:
        """Length of z: every layer's dimensions, bottom layer first."""
        return self.config.latent_dim * self.layers

    @property
    def conditional(self) -> bool:
        """True when encoder and decoder take a condition c."""
        return self.condition_dim > 0

    def condition_vector(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The vector the networks read: one-hot labels, or standardised covariates ``[..., condition_dim]``."""
        return self.condition.vector(self, c)

    @property
    def prior(self) -> Distribution:
        """p(z), event ``[latent_size]``: the configured prior (on the top layer of a hierarchy)."""
        top = self.prior_module(self)
        return top if self.layers == 1 else TopDownPrior(self, top, self.hierarchy.prior_layer(self))

    def prior_for(self, c: torch.Tensor | None = None) -> Distribution:
        """p(z|c): vaelab's conditional models keep p(z) independent of c (Sohn et al.'s simplest CVAE)."""
        return self.prior

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z|x, c), batch shape the broadcast of ``x.shape[:-len(input_shape)]`` and c's leading dims."""
        features, condition = self._features_of(x), self.condition_vector(c)
        if self.layers == 1:
            return gaussian(self.encoder_net.from_features(features, condition))
        return self.hierarchy.posterior(self, features, condition)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z, c) for every z in ``z: [..., latent_size]``; batch shape ``z.shape[:-1]``."""
        params = full_precision(self.decoder_net(self.decoder_input(z), self.condition_vector(c)))
        return self.likelihood(params, self.event_ndims)

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What ``decoder_net`` reads of ``z: [..., latent_size]``: z itself, or what the hierarchy's wiring makes of it."""
        return z if self.layers == 1 else self.hierarchy.decoder_input(self, z)

    def top_posterior(self, x: torch.Tensor) -> Distribution:
        """q(z_L|x) of the top layer for an unconditional model: the VampPrior's components."""
        features = self._features_of(x)
        if self.layers == 1:
            return gaussian(self.encoder_net.from_features(features, None))
        return self.hierarchy.top_posterior(self, features)

    def classify(self, x: torch.Tensor) -> Categorical:
        """q(y|x) (label models trained with missing labels)."""
        if hasattr(self, "label_head"):
            logits = self.label_head(self._features_of(x))
        elif hasattr(self, "label_net"):
            logits = self.label_net(x)
        else:
            raise ValueError("this model has no q(y|x): it was trained with every label observed")
        return Categorical(logits=full_precision(logits), validate_args=False)

    def covariate_posterior(self, x: torch.Tensor, c: torch.Tensor) -> Distribution:
        """q(c|x, c_observed) in standard units, batch ``[B]``, event ``[K]``; NaN in ``c`` = missing."""
        if not hasattr(self, "covariate_net"):
            raise ValueError("this model has no q(c|x): it was trained with every covariate observed")
        observed = ~torch.isnan(c)
        standard = torch.where(observed, self.condition_vector(torch.nan_to_num(c)), 0.0)
        params = self.covariate_net(x, torch.cat((standard, observed.to(standard.dtype)), -1))
        loc, raw_scale = full_precision(params).chunk(2, -1)
        return torch.distributions.Normal(loc, F.softplus(raw_scale) + MIN_SCALE, validate_args=False)

    @contextlib.contextmanager
    def sharing_features(self, x: torch.Tensor) -> Iterator[None]:
        """Inside the block the encoder reads ``x`` once: :meth:`encode` and :meth:`classify` reuse its
        features (M2 encodes each x with every class and classifies it in one step)."""
        self._features = (x, self.encoder_net.features_of(x))
        try:
            yield
        finally:
            self._features = None

    # --- conveniences built on the interface ------------------------------------------------------

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Before training, from the training data ``x: [N, ...]``: start p(x|z) at the data's marginal
        (the decoder's output bias, as Burda et al.'s IWAE code does; about 0.1 nats after 10 epochs
        on Fashion-MNIST) and let a learned prior see the data (the VampPrior's pseudo-inputs)."""
        self.decoder_net.set_output_bias(self.likelihood.output_bias(x.mean(0)).to(self._anchor))
        self.prior_module.initialise(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) for n draws z ~ p(z): ``[n, *input_shape]``, what a picture of samples shows.

        ``c`` holds n conditions, or one that all samples share (a scalar label or one covariate row).
        """
        z = sample(self.prior_for(c), n, generator)
        if c is not None and self.conditional and c.dim() < 1 + self.condition.is_continuous:
            c = c.expand(n, *c.shape)
        return self.decode(z, c).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) at z = the mean of q(z|x, c): ``[B, *input_shape]``."""
        return self.decode(self.encode(x, c).mean, c).mean

    # --- internals ----------------------------------------------------------------------------------

    def _features_of(self, x: torch.Tensor) -> torch.Tensor:
        if self._features is not None and self._features[0] is x:
            return self._features[1]
        return self.encoder_net.features_of(x)
