"""Run configuration: three plain dataclasses (data, model, training) saved as ``config.json``.

``config.json`` holds everything needed to rebuild the model and the data pipeline of a run; it is
written with :func:`dataclasses.asdict` and read back by :meth:`RunConfig.from_dict`, so a run
directory never needs pickle. Every setting is validated in ``__post_init__``: an out-of-range value
raises :class:`ConfigError` naming the setting, which the CLI reports as its flag (``--latent-dim``).
Field names are unique across the three sections so that ``vaelab.train(latent_dim=2, epochs=5)``
and the CLI can address any of them by name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

CONFIG_FORMAT = 2  # bump when a run directory changes; rundir.py upgrades older ones (2: release 0.2)

BINARIZATIONS = ("none", "static", "dynamic")
CLASSIFIERS = ("shared", "separate")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
MAX_STOCHASTIC_LAYERS = 16


def registry_names(kind: str) -> tuple[str, ...]:
    """The names registered for an extension point, read from its registry when asked (so entries a
    user adds at run time are valid names, and the CLI's choices are the same list)."""
    if kind == "arch":
        from vaelab.models.networks import ARCHITECTURES as registry
    elif kind == "likelihood":
        from vaelab.models.likelihoods import LIKELIHOODS as registry
    elif kind == "condition":
        from vaelab.models.conditions import CONDITIONS as registry
    elif kind == "prior":
        from vaelab.models.priors import PRIORS as registry
    else:
        assert kind == "objective", kind
        from vaelab.bounds.objectives import OBJECTIVES as registry
    return tuple(registry)


def _one_of(value: Any, kind: str, setting: str | None = None) -> None:
    names = registry_names(kind)
    _require(isinstance(value, str) and value in names, setting or kind, f"expected one of {', '.join(names)}, got {value!r}")


class ConfigError(VaelabError):
    """An invalid setting; ``setting`` is the field name (``latent_dim``), mapped to a flag by the CLI."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def _require(condition: bool, setting: str, problem: str) -> None:
    if not condition:
        raise ConfigError(setting, problem)


def _positive_ints(values: Any, setting: str, allow_empty: bool) -> tuple[int, ...]:
    try:
        result = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(setting, f"expected a list of positive integers, got {values!r}") from None
    _require(all(v >= 1 for v in result), setting, f"every size must be >= 1, got {list(result)}")
    _require(allow_empty or len(result) > 0, setting, "needs at least one size")
    return result


@dataclass
class DataConfig:
    """Which data, and how it is turned into model inputs."""

    dataset: str = "digits"  # digits | mnist | fashion-mnist, or a path to an image folder / .npz file
    data_dir: str | None = None  # parent folder of <name>/ searched first (then $VAELAB_DATA, system, cache)
    binarize: str = "none"  # none: intensities in [0, 1]; static: one draw; dynamic: fresh draw per epoch
    val_size: int | None = None  # validation examples carved from training data (None: dataset default)
    data_seed: int = 0  # seeds the split of user data and the fixed binarisation of val/test (static: train too)
    labelled: int | None = None  # keep the labels of only this many training examples (class-balanced)
    missing_frac: float | None = None  # hide this fraction of the training covariates (labels or columns)

    def __post_init__(self) -> None:
        _require(bool(self.dataset), "dataset", "must name a dataset or a path")
        _require(
            self.labelled is None or (isinstance(self.labelled, int) and self.labelled >= 1),
            "labelled",
            f"must be >= 1 labelled example, got {self.labelled}",
        )
        _require(
            self.missing_frac is None or 0 <= self.missing_frac < 1,
            "missing_frac",
            f"must be in [0, 1), got {self.missing_frac}",
        )
        _require(
            self.labelled is None or self.missing_frac is None,
            "labelled",
            "give either --labelled or --missing-frac, not both",
        )
        _require(
            self.binarize in BINARIZATIONS,
            "binarize",
            f"expected one of {', '.join(BINARIZATIONS)}, got {self.binarize!r}",
        )
        _require(
            self.val_size is None or self.val_size >= 1, "val_size", f"must be >= 1, got {self.val_size}"
        )


@dataclass
class ModelConfig:
    """Encoder q(z|x), prior p(z) = N(0, I) and decoder p(x|z)."""

    arch: str = "mlp"  # mlp: fully connected; conv: strided convolutions (any image size)
    hidden: tuple[int, ...] = (400,)  # hidden widths (mlp; empty = linear), or dense layers after the convs
    channels: tuple[int, ...] = (32, 64)  # conv only: output channels of each stride-2 convolution
    latent_dim: int = 20  # dimensions of z
    likelihood: str = "bernoulli"  # bernoulli (logits) | gaussian | cbernoulli (continuous Bernoulli)
    gaussian_scale: float | None = None  # gaussian only: fixed sigma; None learns one shared sigma
    mixture_components: int = 10  # dlogistic-mix only: logistics M per pixel (PixelCNN++ uses 10)
    condition: str = "none"  # none | label (one-hot class, CVAE / M2) | covariates (continuous columns)
    input_shape: tuple[int, ...] | None = None  # per-example data shape, filled in from the data
    class_names: tuple[str, ...] | None = None  # label models: class names, index = label (from the data)
    covariate_names: tuple[str, ...] | None = None  # covariate models: column names (from the data)
    infer_missing: bool = False  # add q(y|x) or q(c_missing|x, c_observed): set when covariates are missing
    classifier: str = "shared"  # M2's q(y|x): "shared" reads the encoder's hidden layers, "separate" is its own network
    prior: str = "standard"  # p(z) on the top layer: standard | mog:K (learned mixture) | vamp:K (VampPrior)
    stochastic_layers: int = 1  # latent layers of latent_dim each; > 1 is a top-down hierarchical VAE

    def __post_init__(self) -> None:
        _one_of(self.arch, "arch")
        self.hidden = _positive_ints(self.hidden, "hidden", allow_empty=True)
        self.channels = _positive_ints(self.channels, "channels", allow_empty=False)
        _require(isinstance(self.latent_dim, int) and self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        _one_of(self.likelihood, "likelihood")
        _require(
            self.gaussian_scale is None or self.gaussian_scale > 0,
            "gaussian_scale",
            f"must be > 0, got {self.gaussian_scale}",
        )
        _require(
            isinstance(self.mixture_components, int) and 1 <= self.mixture_components <= 64,
            "mixture_components",
            f"must be in 1..64, got {self.mixture_components}",
        )
        _one_of(self.condition, "condition")
        from vaelab.models.priors import parse_prior

        try:
            parse_prior(self.prior)
        except VaelabError as exc:
            raise ConfigError("prior", str(exc).partition(": ")[2]) from None
        _require(
            isinstance(self.stochastic_layers, int) and 1 <= self.stochastic_layers <= MAX_STOCHASTIC_LAYERS,
            "stochastic_layers",
            f"must be in 1..{MAX_STOCHASTIC_LAYERS}, got {self.stochastic_layers}",
        )
        _require(
            not self.prior.startswith("vamp") or self.condition == "none",
            "prior",
            "vamp mixes the encoder's q(z|u) at pseudo-inputs u, which has no condition: use it with --condition none",
        )
        _require(self.classifier in CLASSIFIERS, "classifier", f"expected one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        if self.class_names is not None:
            self.class_names = tuple(str(name) for name in self.class_names)
        if self.covariate_names is not None:
            self.covariate_names = tuple(str(name) for name in self.covariate_names)
        if self.input_shape is not None:
            self.input_shape = _positive_ints(self.input_shape, "input_shape", allow_empty=False)
            from vaelab.models.networks import ARCHITECTURES

            _require(
                not ARCHITECTURES[self.arch].images_only or len(self.input_shape) == 3,
                "arch",
                f"{self.arch} needs images [C, H, W], but the data have shape {list(self.input_shape)}; use --arch mlp",
            )


@dataclass
class TrainConfig:
    """Optimisation: Adam on the chosen objective (``objectives.py``), mean over each mini-batch."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # examples per gradient step
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant | cosine (from lr down to lr_min over the epochs, per step)
    lr_min: float = 0.0  # cosine: the learning rate at the last step
    grad_clip: float | None = None  # clip the global gradient norm to this value (None: no clipping)
    early_stopping: int | None = None  # stop after this many epochs without a better validation loss
    seed: int = 0  # seeds initialisation, shuffling, binarisation draws and z samples
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:1, mps
    objective: str = "elbo"  # elbo | beta (beta-weighted KL) | iwae (importance-weighted bound)
    beta: float = 1.0  # beta objective: weight of the KL term (Higgins et al. 2017); 1 is the ELBO
    warmup_epochs: float = 0.0  # raise the KL weight linearly from 0 to its value over this many epochs
    free_bits: float = 0.0  # nats per latent dimension below which the batch-mean KL is not penalised
    iwae_samples: int = 5  # iwae objective: importance samples K per example
    alpha: float | None = None  # weight of log q(y|x) on labelled examples (None: Kingma et al.'s 0.1 N / N_l)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the networks; fast on GPUs and CPUs with AVX512-BF16/AMX)
    compile: bool = False  # torch.compile the networks (opt-in: compiling takes time up front)

    def __post_init__(self) -> None:
        _require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            "batch_size",
            f"must be >= 1, got {self.batch_size}",
        )
        _require(self.lr > 0 and self.lr == self.lr, "lr", f"must be > 0, got {self.lr}")
        _require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")
        _require(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"expected one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        _require(0 <= self.lr_min <= self.lr, "lr_min", f"must be in [0, lr], got {self.lr_min}")
        _require(
            self.early_stopping is None or self.early_stopping >= 1,
            "early_stopping",
            f"must be >= 1 epoch, got {self.early_stopping}",
        )
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed}")
        _require(bool(self.device), "device", "must not be empty")
        _one_of(self.objective, "objective")
        _require(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        _require(
            self.objective == "beta" or self.beta == 1.0,
            "beta",
            f"is used by --objective beta only (got {self.beta} with --objective {self.objective})",
        )
        _require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _require(self.free_bits >= 0, "free_bits", f"must be >= 0 nats, got {self.free_bits}")
        _require(
            isinstance(self.iwae_samples, int) and self.iwae_samples >= 1,
            "iwae_samples",
            f"must be >= 1, got {self.iwae_samples}",
        )
        _require(
            self.objective != "iwae" or (self.warmup_epochs == 0 and self.free_bits == 0),
            "objective",
            "iwae trains the importance-weighted bound itself; KL warm-up and free bits apply to elbo and beta",
        )
        _require(self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        _require(self.precision in PRECISIONS, "precision", f"expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    """Everything a run needs; ``config.json`` in the run directory is ``asdict`` of this."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> RunConfig:
        """Rebuild from ``to_dict`` output; unknown sections or keys are errors naming ``source``."""
        if not isinstance(raw, dict):
            raise VaelabError(f"{source}: expected a JSON object with sections {', '.join(SECTIONS)}")
        raw = dict(raw)
        fmt = raw.pop("format", CONFIG_FORMAT)
        if not isinstance(fmt, int) or not 1 <= fmt <= CONFIG_FORMAT:
            raise VaelabError(f"{source}: config format {fmt} is not supported (this vaelab reads {CONFIG_FORMAT})")
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise VaelabError(f"{source}: unknown section(s) {sorted(unknown)}; expected {', '.join(SECTIONS)}")
        parts = {}
        for name, section in SECTIONS.items():
            values = raw.get(name, {})
            if not isinstance(values, dict):
                raise VaelabError(f"{source}: section {name!r} must be a JSON object")
            allowed = {f.name for f in fields(section)}
            extra = set(values) - allowed
            if extra:
                raise VaelabError(f"{source}: unknown setting(s) {sorted(extra)} in section {name!r}")
            if name == "model" and values.get("infer_missing") and "classifier" not in values:
                values = {**values, "classifier": "separate"}  # runs from before the setting had their own q(y|x)
            parts[name] = section(**values)
        return cls(**parts)

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A copy with settings replaced by name (``latent_dim=2``), whichever section holds them."""
        sections = {name: asdict(getattr(self, name)) for name in SECTIONS}
        for key, value in overrides.items():
            owner = next((name for name, values in sections.items() if key in values), None)
            if owner is None:
                known = sorted(k for values in sections.values() for k in values)
                raise VaelabError(f"unknown setting {key!r}; known settings: {', '.join(known)}")
            sections[owner][key] = value
        return RunConfig(**{name: SECTIONS[name](**values) for name, values in sections.items()})


def read_config(path: str | os.PathLike) -> RunConfig:
    """Read a ``config.json`` (a run's, or one written by hand for ``--config``)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaelabError(f"{path}: not a readable JSON config ({exc})") from None
    return RunConfig.from_dict(raw, source=str(path))

