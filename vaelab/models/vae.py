"""The variational autoencoder: encoder q(z|x, c), prior p(z) and decoder p(x|z, c), composed.

Kingma & Welling (2014): an encoder network gives a diagonal Gaussian q_phi(z|x); z is drawn with the
reparameterisation z = mu + sigma * eps, eps ~ N(0, I); a decoder network gives p_theta(x|z); the
prior is p(z) = N(0, I). A conditional VAE (Sohn et al. 2015; Doersch 2016, section 4) feeds a
condition c to both networks: q(z|x, c) and p(x|z, c), so that log p(x|c) is what is bounded and
sampling with a chosen c generates that class (or covariate value). ``config.condition`` says what c
is: a class label (one-hot), or continuous covariates (standardised with the training statistics).

When part of c is missing, c itself is inferred (``config.infer_missing``): a classifier q(y|x)
for labels (Kingma et al. 2014, "M2") or a Gaussian q(c_missing|x, c_observed) for covariates
(Ramchandran et al. 2022); the bounds that use them are in ``semi_supervised.py``.

Everything downstream (objectives, evaluation, plots, the CLI) talks to a model only through
:meth:`VAE.encode`, :meth:`VAE.decode` and :attr:`VAE.prior`, which return
``torch.distributions.Distribution`` objects:

- ``encode(x, c)``: batch shape ``[B]``, event ``[latent_dim]``;
- ``decode(z, c)``: batch shape ``z.shape[:-1]``, event = the data shape; ``log_prob(x)`` is ``[B]``;
- ``prior``: batch shape ``[]``, event ``[latent_dim]``, so ``kl_divergence(encode(x), prior)`` is ``[B]``.

``c`` is given as the data holds it: int64 labels ``[B]`` or float covariates ``[B, K]`` (a one-hot
or probability vector ``[B, n_classes]`` is accepted for labels too); unconditional models take none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelab.config import ModelConfig
from vaelab.models.likelihoods import make_likelihood
from vaelab.models.networks import build_decoder, build_encoder

_MIN_SCALE = 1e-5  # floor on q's standard deviation: keeps log sigma finite in the KL


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network outputs in fp32 when autocast made them bf16/fp16: distributions are computed in full precision."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def condition_dim(config: ModelConfig) -> int:
    """Length of the condition vector: classes (one-hot), covariates, or 0 for an unconditional VAE."""
    if config.condition == "label":
        assert config.class_names, "label models need class_names (filled in from the data)"
        return len(config.class_names)
    if config.condition == "covariates":
        assert config.covariate_names, "covariate models need covariate_names (filled in from the data)"
        return len(config.covariate_names)
    return 0


class VAE(nn.Module):
    """A VAE with a Gaussian encoder, a standard normal prior and the configured likelihood."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.input_shape is not None, "set config.input_shape (done by vaelab.train from the data)"
        self.config = config
        self.condition_dim = condition_dim(config)
        shared_classifier = config.infer_missing and config.condition == "label" and config.classifier == "shared"
        self.encoder_net = build_encoder(config, 2 * config.latent_dim, self.condition_dim, condition_last=shared_classifier)
        self.decoder_net = build_decoder(config, self.condition_dim)
        self.event_ndims = len(config.input_shape)
        if config.likelihood == "gaussian" and config.gaussian_scale is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))  # one learned sigma shared by all dimensions
        # The prior's parameters are buffers so that ``prior`` follows ``.to(device)``; not saved.
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(config.latent_dim), persistent=False)
        if config.condition == "covariates":
            # Training statistics of the covariates (saved with the weights): c enters the networks,
            # and q(c_missing|...) works, in standard units (c - mean) / std.
            self.register_buffer("covariate_mean", torch.zeros(self.condition_dim))
            self.register_buffer("covariate_std", torch.ones(self.condition_dim))
        if shared_classifier:  # q(y|x): a softmax layer on the encoder's hidden layers, trained on every example
            self.label_head = nn.Linear(self.encoder_net.n_features, self.condition_dim)
        elif config.infer_missing and config.condition == "label":  # q(y|x): a network of its own
            self.label_net = build_encoder(config, self.condition_dim)
        if config.infer_missing and config.condition == "covariates":
            # q(c|x, c_observed): mean and pre-softplus scale per covariate, reading the observed
            # values (0 where missing) and the mask of which are observed.
            self.covariate_net = build_encoder(config, 2 * self.condition_dim, 2 * self.condition_dim)

    @property
    def conditional(self) -> bool:
        """True when encoder and decoder take a condition c."""
        return self.condition_dim > 0

    def condition_vector(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The vector the networks read: one-hot labels, or standardised covariates ``[B, condition_dim]``."""
        if not self.conditional:
            if c is not None:
                raise ValueError("this model is unconditional: pass no condition c")
            return None
        if c is None:
            raise ValueError(f"this model is conditioned on {self.config.condition}: pass c")
        if self.config.condition == "label":
            if c.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
                if bool(((c < 0) | (c >= self.condition_dim)).any()):
                    raise ValueError(f"labels must be in 0..{self.condition_dim - 1}")
                return F.one_hot(c.long(), self.condition_dim).to(self.prior_loc.dtype)
            return c.to(self.prior_loc.dtype)  # already a one-hot / probability vector
        return (c.to(self.prior_loc.dtype) - self.covariate_mean) / self.covariate_std

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def prior(self) -> Distribution:
        """p(z) = N(0, I), event ``[latent_dim]``."""
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z|x, c) = N(mu, diag sigma^2), batch shape ``x.shape[:-len(input_shape)]``."""
        loc, scale = self.posterior_params(x, self.condition_vector(c))
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def posterior_params(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of q(z|x, c), each ``[B, latent_dim]``, given the condition *vector*
        (:meth:`condition_vector`); sigma = softplus(.) cannot overflow as exp(log-variance) can.
        ``features`` are the encoder's :meth:`encoder_features` of x when already computed."""
        h = self.encoder_features(x) if features is None else features
        loc, raw_scale = _full_precision(self.encoder_net.from_features(h, condition)).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + _MIN_SCALE

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z, c) for every z in ``z: [..., latent_dim]``; batch shape ``z.shape[:-1]``."""
        return self.likelihood(z, self.condition_vector(c))

    def likelihood(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> Distribution:
        """:meth:`decode` given the condition *vector* instead of the raw c."""
        params = _full_precision(self.decoder_net(z, condition))
        return make_likelihood(self.config.likelihood, params, self.event_ndims, self.observation_scale())

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads from x before the condition joins (the input to
        :meth:`posterior_params` and, when shared, to q(y|x)): ``[B, n_features]``. M2 computes
        it once per example rather than once per class."""
        return self.encoder_net.features_of(x)

    def classify(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of q(y|x), ``[B, n_classes]`` (label models trained with missing labels); a shared
        classifier reads the encoder's ``features`` of x (computed here when not given)."""
        if hasattr(self, "label_head"):
            return self.label_head(self.encoder_features(x) if features is None else features)
        if not hasattr(self, "label_net"):
            raise ValueError("this model has no q(y|x): it was trained with every label observed")
        return self.label_net(x)

    def covariate_posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        """q(c|x, c_observed) in standard units, ``[B, K]``; NaN entries of ``c: [B, K]`` are the missing ones."""
        if not hasattr(self, "covariate_net"):
            raise ValueError("this model has no q(c|x): it was trained with every covariate observed")
        observed = ~torch.isnan(c)
        standard = torch.where(observed, self.condition_vector(torch.nan_to_num(c)), 0.0)
        loc, raw_scale = self.covariate_net(x, torch.cat((standard, observed.to(standard.dtype)), -1)).chunk(2, -1)
        return Normal(loc, F.softplus(raw_scale) + _MIN_SCALE, validate_args=False)

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
    def sample(self, n: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) for n draws z ~ p(z): ``[n, *input_shape]``, what a picture of samples shows.

        ``c`` (conditional models) holds n conditions, or one that all samples share: a scalar label
        or one covariate row ``[K]``.
        """
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.prior_loc.device)
        if c is not None and c.dim() == (0 if self.config.condition == "label" else 1):
            c = c.expand(n, *c.shape)
        return self.decode(z, c).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z, c) at z = the mean of q(z|x, c): ``[B, *input_shape]``."""
        return self.decode(self.encode(x, c).mean, c).mean
