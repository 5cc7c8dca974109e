"""Run configuration: three plain dataclasses (data, model, training) saved as ``config.json``.

``config.json`` holds everything needed to rebuild the model and the data pipeline of a run; it is
written with :func:`dataclasses.asdict` and read back by :meth:`RunConfig.from_dict`, so a run
directory never needs pickle. Every setting is validated in ``__post_init__``: an out-of-range value
raises :class:`ConfigError` naming the setting, which the CLI reports as its flag (``--latent-dim``).
Field names are unique across the three sections so that ``vaelab.train(latent_dim=2, epochs=5)``
and the CLI can address any of them by name.
"""

from __future__ import annotations

import functools
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError

CONFIG_FORMAT = 3  # bump when a run directory changes; rundir.py upgrades older ones (2: release 0.2; 3: see rundir)

BINARIZATIONS = ("none", "static", "dynamic")
CLASSIFIERS = ("shared", "separate")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
MAX_STOCHASTIC_LAYERS = 16
MAX_CONTEXT_HIDDEN = 256  # bernoulli-ar: the context is a per-pixel network; wider is a different model (PixelCNN)
DEFAULT_EPOCHS = 10  # without --epochs: this many passes over the training set...
MIN_DEFAULT_STEPS = 3000  # ...or more on a small one, so that it still gets this many gradient steps
MAX_INT = 2**63 - 1  # every integer setting fits a signed 64-bit integer (torch's seeds, tensor sizes)
# The largest model vaelab builds: 4 GiB of float32 parameters (1.07e9 of them). Adam's two moments
# and the gradients make training need four times as much; anything larger is a typo (--hidden 1000000000),
# refused from the config before a single tensor is allocated.
MAX_PARAMETER_BYTES = 4 * 1024**3
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes; 1 MiB is generous
MAX_JSON_DEPTH = 32  # config.json nests 2 levels deep; deeper input is refused before json.loads recurses


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
    elif kind == "hierarchy":
        from vaelab.models.hierarchies import HIERARCHIES as registry
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
    """A list (JSON) or tuple of integers >= 1; strings, floats and booleans are refused, not converted."""
    if not isinstance(values, (list, tuple)) or not all(_is_int(v) for v in values):
        raise ConfigError(setting, f"expected a list of positive integers, got {values!r}")
    result = tuple(values)
    _require(all(1 <= v <= MAX_INT for v in result), setting, f"every size must be in 1..{MAX_INT}, got {list(result)}")
    _require(allow_empty or len(result) > 0, setting, "needs at least one size")
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


def _check_types(config: Any) -> None:
    """Every field of a config dataclass against its annotation, before any range check.

    JSON and Python callers can hand over anything: ``"epochs": true``, ``"lr": "0.001"``,
    ``"compile": "yes"``. Nothing is converted: ints must be ints (bool is not one) within 64 bits,
    floats finite numbers (ints allowed), strings strings, booleans booleans; tuples are checked by
    the range checks that follow. A mismatch is a :class:`ConfigError` naming the setting.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        kinds = _field_kinds(type(config))[f.name]
        if value is None and type(None) in kinds:
            continue
        if int in kinds and _is_int(value):
            _require(-MAX_INT - 1 <= value <= MAX_INT, f.name, f"must fit in 64 bits, got {value}")
        elif float in kinds and (_is_int(value) or isinstance(value, float)):
            _require(math.isfinite(value), f.name, f"must be a finite number, got {value!r}")
            setattr(config, f.name, float(value))
        elif str in kinds and isinstance(value, str):
            pass
        elif bool in kinds and isinstance(value, bool):
            pass
        elif tuple in kinds and isinstance(value, (list, tuple)):
            pass
        else:
            expected = " or ".join(_KIND_NAMES[k] for k in kinds)
            raise ConfigError(f.name, f"expected {expected}, got {value!r}")


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               tuple: "a list", type(None): "null"}


@functools.lru_cache(maxsize=None)
def _field_kinds(cls: type) -> dict[str, tuple[type, ...]]:
    """field name -> the plain types its annotation allows (``int | None`` -> (int, NoneType))."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        kinds[name] = tuple(typing.get_origin(o) or o for o in options)
    return kinds


def parameter_count(model: ModelConfig) -> int:
    """An estimate of the model's number of parameters, computed from the config alone.

    Dense layers ``a -> b`` cost ``(a + 1) b``: the encoder's chain input -> hidden -> 2 latent_dim
    (mean and scale), the decoder's latent_dim -> hidden reversed -> the likelihood's outputs, and for
    hierarchies one such latent head per extra layer; conv layers (4x4 kernels) cost ``16 c_in c_out + c_out``
    each way. Without ``input_shape`` (not known before the data are read) only the layers between
    hidden and latent sizes count, and the convolutions between channel sizes at 1x1 feature maps: a
    lower bound, enough to refuse absurd sizes at once. Within a small factor of the truth, which is
    all :func:`check_model_size` needs.
    """
    hidden = list(model.hidden)
    latent = model.latent_dim

    def dense(sizes: list[int]) -> int:
        return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))

    convolutional = model.arch in ("conv", "resnet")
    if model.input_shape is None:
        count = dense([*hidden, 2 * latent]) + dense([latent, *reversed(hidden)])
        if convolutional:  # at least 1x1 feature maps: the last conv's channels feed the dense layers
            channels = list(model.channels)
            count += 2 * sum(16 * a * b for a, b in zip(channels, channels[1:])) + 2 * dense([channels[-1], *hidden[:1]])
        return count + (model.stochastic_layers - 1) * dense([latent, *hidden[-1:], 2 * latent])
    shape = tuple(model.input_shape)
    outputs_per_value = 3 * model.mixture_components if model.likelihood == "dlogistic-mix" else 2
    if convolutional and len(shape) == 3:
        channels = list(model.channels)
        c, h, w = shape
        for _ in channels:
            h, w = max(h // 2, 1), max(w // 2, 1)
        features = channels[-1] * h * w
        convs = sum(16 * a * b + b for a, b in zip([c, *channels], channels))
        if model.arch == "resnet":
            convs += sum(2 * (9 * k * k + k) for k in channels)
        count = 2 * convs + dense([features, *hidden, 2 * latent]) + dense([latent, *reversed(hidden), features])
        count += 16 * c * outputs_per_value * channels[0]
    else:
        values = math.prod(shape)
        count = dense([values, *hidden, 2 * latent]) + dense([latent, *reversed(hidden), outputs_per_value * values])
    return count + (model.stochastic_layers - 1) * dense([latent, *hidden[-1:], 2 * latent])


def check_model_size(model: ModelConfig) -> None:
    """Refuse a model over :data:`MAX_PARAMETER_BYTES` of float32 parameters, naming the setting to shrink."""
    need = 4 * parameter_count(model)
    if need <= MAX_PARAMETER_BYTES:
        return
    sizes = {"hidden": max(model.hidden, default=0), "latent_dim": model.latent_dim * model.stochastic_layers}
    if model.arch in ("conv", "resnet"):
        sizes["channels"] = max(model.channels)
    if model.input_shape is not None:
        sizes["input_shape"] = math.prod(model.input_shape)
    culprit = max(sizes, key=sizes.get)
    raise ConfigError(
        culprit,
        f"the model would need {need / 1e9:.3g} GB of float32 parameters (hidden {list(model.hidden)}, "
        f"latent_dim {model.latent_dim}), more than vaelab's limit of {MAX_PARAMETER_BYTES / 1e9:.3g} GB; choose smaller sizes",
    )


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
        _check_types(self)
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
    likelihood: str = "auto"  # auto (chosen from the training data) or a name in models/likelihoods.py's LIKELIHOODS
    gaussian_scale: float | None = None  # gaussian only: fixed sigma; None learns one shared sigma
    mixture_components: int = 10  # dlogistic-mix only: logistics M per pixel (PixelCNN++ uses 10)
    context_hidden: int = 0  # bernoulli-ar only: ELU units per pixel in the causal context; 0 = linear (autoregressive.py)
    log_scale_cap: float | None = 0.0  # dlogistic(-mix): soft upper bound on log s (discretized.py); None: none, as before format 3
    condition: str = "none"  # none | label (one-hot class, CVAE / M2) | covariates (continuous columns)
    input_shape: tuple[int, ...] | None = None  # per-example data shape, filled in from the data
    class_names: tuple[str, ...] | None = None  # label models: class names, index = label (from the data)
    covariate_names: tuple[str, ...] | None = None  # covariate models: column names (from the data)
    infer_missing: bool = False  # add q(y|x) or q(c_missing|x, c_observed): set when covariates are missing
    classifier: str = "shared"  # M2's q(y|x): "shared" reads the encoder's hidden layers, "separate" is its own network
    prior: str = "standard"  # p(z) on the top layer: standard | mog:K (learned mixture) | vamp:K (VampPrior)
    stochastic_layers: int = 1  # latent layers of latent_dim each; > 1 is a top-down hierarchical VAE
    hierarchy: str = "ladder"  # how layers connect when stochastic_layers > 1: a name in models/hierarchies.py

    def __post_init__(self) -> None:
        _check_types(self)
        _one_of(self.arch, "arch")
        self.hidden = _positive_ints(self.hidden, "hidden", allow_empty=True)
        self.channels = _positive_ints(self.channels, "channels", allow_empty=False)
        _require(isinstance(self.latent_dim, int) and self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        if self.likelihood != "auto":
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
        _require(
            isinstance(self.context_hidden, int) and 0 <= self.context_hidden <= MAX_CONTEXT_HIDDEN,
            "context_hidden",
            f"must be in 0..{MAX_CONTEXT_HIDDEN}, got {self.context_hidden}",
        )
        _require(self.context_hidden == 0 or self.likelihood == "bernoulli-ar", "context_hidden",
                 f"only the bernoulli-ar likelihood has a causal context, not {self.likelihood!r} "
                 "(add --likelihood bernoulli-ar, or leave context_hidden at 0)")
        _require(self.log_scale_cap is None or math.isfinite(self.log_scale_cap), "log_scale_cap",
                 f"must be a finite number or null, got {self.log_scale_cap}")
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
        _one_of(self.hierarchy, "hierarchy")

        _require(self.classifier in CLASSIFIERS, "classifier", f"expected one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        for setting in ("class_names", "covariate_names"):
            names = getattr(self, setting)
            if names is not None:
                _require(all(isinstance(name, (str, int)) and not isinstance(name, bool) for name in names),
                         setting, f"expected a list of names, got {names!r}")
                setattr(self, setting, tuple(str(name) for name in names))
        if self.input_shape is not None:
            self.input_shape = _positive_ints(self.input_shape, "input_shape", allow_empty=False)
            _require(len(self.input_shape) <= 3, "input_shape", f"expected [D] or [C, H, W], got {list(self.input_shape)}")
            from vaelab.models.networks import ARCHITECTURES

            _require(
                not ARCHITECTURES[self.arch].images_only or len(self.input_shape) == 3,
                "arch",
                f"{self.arch} needs images [C, H, W], but the data have shape {list(self.input_shape)}; use --arch mlp",
            )
        check_model_size(self)


def default_epochs(n_train: int, batch_size: int) -> int:
    """Epochs when none are given: 10, or as many as make 3,000 gradient steps on a small training set.

    What fits a model is the number of updates, not of passes: 10 epochs are 4,300 steps on
    Fashion-MNIST but 100 on the 1,257 UCI digits, and 190 on a folder of 3,000 photos, where
    reconstructions are still blobs (BENCHMARKS.md, colour defaults: sharp edges need ~3,000).
    """
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return max(DEFAULT_EPOCHS, math.ceil(MIN_DEFAULT_STEPS / steps_per_epoch))


@dataclass
class TrainConfig:
    """Optimisation: Adam on the chosen objective (``objectives.py``), mean over each mini-batch."""

    epochs: int | None = None  # passes over the training set; None: default_epochs() of the training data
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
    init_from: str | None = None  # a run of the same model whose weights this run starts from (None: seeded initialisation)

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self.epochs is None or self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
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
        from vaelab.bounds.objectives import OBJECTIVES

        if not OBJECTIVES[self.objective].uses_kl_schedule and (self.warmup_epochs or self.free_bits):
            scheduled = ", ".join(name for name, entry in OBJECTIVES.items() if entry.uses_kl_schedule)
            raise ConfigError("objective", f"{self.objective} trains its bound as it is; KL warm-up and free bits apply to {scheduled}")
        _require(self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        _require(self.precision in PRECISIONS, "precision", f"expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(self.init_from is None or bool(self.init_from), "init_from", "must name a run directory")


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
            if name == "model" and fmt < 3 and "log_scale_cap" not in values and _reads_log_scale_cap(values.get("likelihood")):
                values = {**values, "log_scale_cap": None}  # their 8-bit likelihoods had no bound on log s
            try:
                parts[name] = section(**values)
            except ConfigError as exc:
                raise VaelabError(f"{source}: {name}.{exc.setting}: {exc.problem}") from None
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


def _reads_log_scale_cap(likelihood: Any) -> bool:
    """Whether ``likelihood`` reads the bound format 3 added (then a run saved before it gets ``None``, no
    bound, as it was trained; others keep the default, which they never read)."""
    from vaelab.models.likelihoods import LIKELIHOODS

    return isinstance(likelihood, str) and likelihood in LIKELIHOODS and "log_scale_cap" in LIKELIHOODS[likelihood].reads


def json_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in JSON ``text`` (brackets inside strings do not count).

    Python's ``json`` module recurses once per level and raises ``RecursionError`` at ~1000 levels;
    measuring the depth first, in a loop, lets a reader refuse deep input with a plain message.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def read_json_file(path: Path, expected: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """The JSON value in ``path``, read with bounded effort: a regular file (not a FIFO or
    ``/dev/zero``) of at most ``max_bytes``, nested at most :data:`MAX_JSON_DEPTH` deep.
    Any problem is a one-line :class:`VaelabError` naming the file and ``expected``."""
    from vaelab.data.idx import read_file_hashed

    if not path.exists() and not path.is_symlink():
        raise VaelabError(f"{path}: no such {expected}")
    data, _ = read_file_hashed(path, expected, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VaelabError(f"{path}: not a readable {expected} (not UTF-8: {exc.reason})") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise VaelabError(f"{path}: not a readable {expected} (JSON nested more than {MAX_JSON_DEPTH} levels deep)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise VaelabError(f"{path}: not a readable {expected} ({exc})") from None


def read_config(path: str | os.PathLike) -> RunConfig:
    """Read a ``config.json`` (a run's, or one written by hand for ``--config``)."""
    path = Path(path)
    raw = read_json_file(path, "JSON config")
    return RunConfig.from_dict(raw, source=str(path))
