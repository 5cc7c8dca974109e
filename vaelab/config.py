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

CONFIG_FORMAT = 1  # bump when config.json changes incompatibly

ARCHITECTURES = ("mlp", "conv")
LIKELIHOOD_NAMES = ("bernoulli", "gaussian", "cbernoulli")
BINARIZATIONS = ("none", "static", "dynamic")
CONDITIONS = ("none", "label", "covariates")
CLASSIFIERS = ("shared", "separate")
OBJECTIVES = ("elbo", "beta", "iwae")
PRECISIONS = ("fp32", "bf16")


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
    condition: str = "none"  # none | label (one-hot class, CVAE / M2) | covariates (continuous columns)
    input_shape: tuple[int, ...] | None = None  # per-example data shape, filled in from the data
    class_names: tuple[str, ...] | None = None  # label models: class names, index = label (from the data)
    covariate_names: tuple[str, ...] | None = None  # covariate models: column names (from the data)
    infer_missing: bool = False  # add q(y|x) or q(c_missing|x, c_observed): set when covariates are missing
    classifier: str = "shared"  # M2's q(y|x): "shared" reads the encoder's hidden layers, "separate" is its own network

    def __post_init__(self) -> None:
        _require(self.arch in ARCHITECTURES, "arch", f"expected one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        self.hidden = _positive_ints(self.hidden, "hidden", allow_empty=True)
        self.channels = _positive_ints(self.channels, "channels", allow_empty=False)
        _require(isinstance(self.latent_dim, int) and self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        _require(
            self.likelihood in LIKELIHOOD_NAMES,
            "likelihood",
            f"expected one of {', '.join(LIKELIHOOD_NAMES)}, got {self.likelihood!r}",
        )
        _require(
            self.gaussian_scale is None or self.gaussian_scale > 0,
            "gaussian_scale",
            f"must be > 0, got {self.gaussian_scale}",
        )
        _require(
            self.condition in CONDITIONS,
            "condition",
            f"expected one of {', '.join(CONDITIONS)}, got {self.condition!r}",
        )
        _require(self.classifier in CLASSIFIERS, "classifier", f"expected one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        if self.class_names is not None:
            self.class_names = tuple(str(name) for name in self.class_names)
        if self.covariate_names is not None:
            self.covariate_names = tuple(str(name) for name in self.covariate_names)
        if self.input_shape is not None:
            self.input_shape = _positive_ints(self.input_shape, "input_shape", allow_empty=False)
            _require(
                self.arch != "conv" or len(self.input_shape) == 3,
                "arch",
                f"conv needs images [C, H, W], but the data have shape {list(self.input_shape)}; use --arch mlp",
            )


@dataclass
class TrainConfig:
    """Optimisation: Adam on the chosen objective (``objectives.py``), mean over each mini-batch."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # examples per gradient step
    lr: float = 1e-3  # Adam learning rate
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
        _require(
            self.early_stopping is None or self.early_stopping >= 1,
            "early_stopping",
            f"must be >= 1 epoch, got {self.early_stopping}",
        )
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed}")
        _require(bool(self.device), "device", "must not be empty")
        _require(
            self.objective in OBJECTIVES,
            "objective",
            f"expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
        )
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
        if fmt != CONFIG_FORMAT:
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

