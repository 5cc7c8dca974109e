"""The run directory: what a training run leaves on disk, and how it is read back without pickle.

Layout (every file written atomically):

- ``config.json``: the :class:`~vaelab.config.RunConfig`, enough to rebuild model and data pipeline;
- ``model.safetensors``: the model's weights, loadable anywhere (``vaelab.load`` or plain safetensors);
- ``training_state.safetensors``: the checkpoint — weights, optimizer state, random-generator state
  and every metrics record up to the last finished epoch, in one file. Writing it (to a temporary
  name, fsync, rename, fsync of the directory) is the one atomic step that commits an epoch;
  ``model.safetensors`` and ``metrics.jsonl`` are written after it and, should a kill fall between
  the writes, rewritten from it on ``--resume``, so a run never mixes epochs;
- ``metrics.jsonl``: one JSON object per epoch; ``summary.json``: test-set figures after training;
- ``data.json``: where the data came from (file paths with their sha256, or the embedded dataset);
- ``samples.png``, ``reconstructions.png``, ``loss_curve.png``: pictures.

Temporaries of writes a kill interrupted (``.<name>.*.tmp``) are removed when the run is next started.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from vaelab.config import CONFIG_FORMAT, MAX_PARAMETER_BYTES, ModelConfig, RunConfig, read_config
from vaelab.data.idx import read_file_hashed
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from vaelab.models.vae import VAE

CONFIG = "config.json"
MODEL = "model.safetensors"
TRAINING_STATE = "training_state.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
DATA = "data.json"
SAMPLES = "samples.png"
RECONSTRUCTIONS = "reconstructions.png"
LOSS_CURVE = "loss_curve.png"

# Reads are bounded by what a valid file can hold, so /dev/zero or a FIFO in a run directory is an
# error, not a hang: a training state holds the weights three times (model, best model, two Adam
# moments make four) plus metadata; metrics.jsonl is a few hundred bytes per epoch.
MAX_SAFETENSORS_BYTES = 4 * MAX_PARAMETER_BYTES + (64 << 20)
MAX_METRICS_BYTES = 256 << 20
MAX_JSON_BYTES = 64 << 20  # summary.json, evaluation-*.json and the like


@dataclass
class Run:
    """A trained model with the configuration it was trained under and its run directory."""

    model: VAE
    config: RunConfig
    path: Path | None
    metrics: list[dict[str, Any]]


@dataclass
class TrainingState:
    """What ``--resume`` needs beyond the config: last finished epoch, weights, optimizer, RNG."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    best_loss: float
    best_epoch: int
    best_model: dict[str, torch.Tensor] | None
    finished: bool
    metrics: list[dict[str, Any]] | None = None  # every record up to ``epoch`` (None: written before release 0.2)
    initial_loss: float | None = None  # validation -ELBO of the initial model, for divergence checks


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with a one-line error naming it if unreadable.

    Only a regular file of at most :data:`MAX_SAFETENSORS_BYTES` is read (a symlink to /dev/zero or a
    FIFO in its place is refused at once)."""
    if not path.exists() and not path.is_symlink():
        raise VaelabError(f"{path}: missing (the run directory is incomplete)")
    data, _ = read_file_hashed(path, "a safetensors file", MAX_SAFETENSORS_BYTES)
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
    except (SafetensorError, ValueError, AttributeError, RecursionError, json.JSONDecodeError) as exc:
        raise VaelabError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    return tensors, metadata


def read_json(path: Path, expected: str = "JSON file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of the run directory, read with bounded effort (see :func:`vaelab.config.read_json_file`)."""
    from vaelab.config import read_json_file

    return read_json_file(path, expected, max_bytes)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Tensors (moved to the CPU, made contiguous) and metadata as one safetensors file, written atomically."""
    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save_safetensors_bytes(contiguous, metadata=metadata))


def save_model(run_dir: Path, model: VAE) -> None:
    write_safetensors(run_dir / MODEL, model.state_dict(), {"format": "vaelab-model-1"})


def save_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def save_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))


def save_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(run_dir / SUMMARY, summary)


def save_provenance(run_dir: Path, dataset: str, provenance: Any) -> None:
    """``data.json``: the dataset's name and its files with their sha256 (or the embedded source)."""
    files = [{"path": path, "sha256": digest} for path, digest in provenance] if not isinstance(provenance, str) else []
    atomic_write_json(run_dir / DATA, {"dataset": dataset, "source": provenance if isinstance(provenance, str) else None,
                                       "files": files})


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete the ``.<name>.*.tmp`` files of atomic writes that a kill interrupted; their names."""
    removed = []
    for path in run_dir.rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(str(path.relative_to(run_dir)))
    return removed


def is_unstarted(run_dir: Path) -> bool:
    """True for a directory that a run created and left before its first checkpoint — only its
    ``config.json`` and data.json, or, when the kill fell inside the first write, nothing but that
    write's temporary (``.config.json.*.tmp``) — it may be started again in place."""
    entries = [p.name for p in run_dir.iterdir()]
    names = {name for name in entries if not name.endswith(".tmp")}
    started_config = CONFIG in names or any(name.startswith(f".{CONFIG}.") for name in entries)
    return started_config and names <= {CONFIG, DATA}


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Optimizer state as tensors ``optimizer.<param>.<key>`` plus its param groups as JSON."""
    tensors = {}
    for param_id, values in state_dict["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{param_id}.{key}"] = torch.as_tensor(value)
    return tensors, json.dumps(state_dict["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups_json: str) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": json.loads(groups_json)}


def save_training_state(run_dir: Path, state: TrainingState) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in state.model.items()}
    optimizer_tensors, groups = _flatten_optimizer(state.optimizer)
    tensors.update(optimizer_tensors)
    tensors["generator"] = state.generator
    if state.best_model is not None:
        tensors.update({f"best.{k}": v for k, v in state.best_model.items()})
    metadata = {
        "format": "vaelab-training-state-1",
        "epoch": str(state.epoch),
        "param_groups": groups,
        "best_loss": repr(state.best_loss),
        "best_epoch": str(state.best_epoch),
        "finished": str(state.finished),
        "metrics": json.dumps(state.metrics or []),
        "initial_loss": repr(state.initial_loss),
    }
    write_safetensors(run_dir / TRAINING_STATE, tensors, metadata)


def load_training_state(run_dir: Path) -> TrainingState:
    """The checkpoint, validated: a damaged or hand-edited file is a one-line error naming it."""
    path = run_dir / TRAINING_STATE
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != "vaelab-training-state-1":
        raise VaelabError(f"{path}: not a vaelab training state")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "best": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in groups:
            groups[prefix][rest if prefix != "optimizer" else name] = value
    try:
        state = TrainingState(
            epoch=int(metadata["epoch"]),
            model=groups["model"],
            optimizer=_unflatten_optimizer(groups["optimizer"], metadata["param_groups"]),
            generator=tensors["generator"],
            best_loss=float(metadata["best_loss"]),
            best_epoch=int(metadata["best_epoch"]),
            best_model=groups["best"] or None,
            finished={"True": True, "False": False}[metadata["finished"]],
            metrics=json.loads(metadata["metrics"]) if "metrics" in metadata else None,
            initial_loss=float(metadata["initial_loss"]) if metadata.get("initial_loss", "None") != "None" else None,
        )
    except (KeyError, ValueError, TypeError, RecursionError, json.JSONDecodeError) as exc:
        raise VaelabError(f"{path}: damaged training state ({type(exc).__name__}: {exc}); the run cannot be resumed") from None
    problems = [
        (state.epoch >= 1, f"epoch must be >= 1, got {state.epoch}"),
        (0 <= state.best_epoch <= state.epoch, f"best_epoch must be in 0..{state.epoch}, got {state.best_epoch}"),
        (state.generator.dtype == torch.uint8 and state.generator.dim() == 1, "generator must be a uint8 vector"),
        (isinstance(state.optimizer["param_groups"], list) and all(isinstance(g, dict) for g in state.optimizer["param_groups"]),
         "param_groups must be a list of objects"),
        (state.metrics is None or (isinstance(state.metrics, list) and len(state.metrics) == state.epoch
                                   and all(isinstance(m, dict) and m.get("epoch") == i + 1 for i, m in enumerate(state.metrics))),
         "metrics must hold one record per epoch"),
    ]
    for ok, problem in problems:
        if not ok:
            raise VaelabError(f"{path}: damaged training state ({problem}); the run cannot be resumed")
    for prefix, weights in (("model", state.model), ("best", state.best_model or {})):
        for name, tensor in weights.items():
            if tensor.dtype != torch.float32:  # vaelab keeps float32 weights (bf16 is autocast, not storage)
                problem = f"tensor {prefix}.{name} is {str(tensor.dtype).removeprefix('torch.')}, expected float32"
            elif not bool(torch.isfinite(tensor).all()):
                problem = f"tensor {prefix}.{name} holds NaN or infinite values"
            else:
                continue
            raise VaelabError(f"{path}: damaged training state ({problem}); the run cannot be resumed")
    return state


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (none if the file is absent), each a JSON object with an ``epoch``."""
    path = run_dir / METRICS
    if not path.exists() and not path.is_symlink():
        return []
    fmt = run_format(run_dir)
    data, _ = read_file_hashed(path, "a metrics file (JSON lines)", MAX_METRICS_BYTES)
    records = []
    try:
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if line.lstrip()[:1] != "{" or line.count("[") + line.count("{") > 64:
                raise ValueError(f"line {number} is not a flat JSON object")
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) or isinstance(record.get("epoch"), bool):
                raise ValueError(f"line {number} is not an object with an integer epoch")
            records.append(upgrade_record(record, fmt))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VaelabError(f"{path}: not readable JSON lines ({' '.join(str(exc).split())})") from None
    return records


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run directory as a Path, or a one-line error saying why it is not one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise VaelabError(f"{path}: no such run directory")
    if not (path / CONFIG).is_file():
        raise VaelabError(f"{path}: not a vaelab run directory (no {CONFIG})")
    return path


# --- upgrading run directories written by earlier releases --------------------------------------
#
# ``config.json`` carries a ``format`` number (``config.CONFIG_FORMAT``). Reading an older run renames
# what has moved since, here and only here, one step per format, so that every release's runs load.


def _weights_from_format_1(weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Release 0.1 -> 2: the learned Gaussian sigma moved into the likelihood module
    (``log_sigma`` -> ``likelihood.log_sigma``), and runs from before conditional models had one
    ``body`` Sequential per network (:func:`_names_before_conditional_networks`)."""
    weights = _names_before_conditional_networks(weights, config)
    return {("likelihood.log_sigma" if name == "log_sigma" else name): tensor for name, tensor in weights.items()}


def _metrics_from_format_1(record: dict[str, Any]) -> dict[str, Any]:
    """Release 0.1 -> 2: the negative ELBO was called ``loss`` (``train_loss``, ``val_loss``, ``test_loss``)."""
    return {(f"{key[:-len('_loss')]}_negative_elbo" if key.endswith("_loss") else key): value for key, value in record.items()}


def _weights_from_format_2(weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Format 2 -> 3: the resnet decoder gained a skip from z to its output head
    (``decoder_net.skip``); zero weights are exactly the decoder it was. (The other change of format
    3, the bound on the 8-bit likelihoods' log s, is a setting: ``read_config`` gives older runs
    of those likelihoods ``log_scale_cap = None``, no bound, as they were trained.)"""
    if config.arch != "resnet" or "decoder_net.skip.weight" in weights:
        return weights
    head_input = weights["decoder_net.head.0.weight"].shape[1]  # latent (+ condition) width
    last = max(int(name.split(".")[2]) for name in weights if re.fullmatch(r"decoder_net\.body\.\d+\.weight", name))
    outputs = weights[f"decoder_net.body.{last}.weight"].shape[0]  # the 1x1 output head's channels
    like = weights["decoder_net.head.0.weight"]
    return {**weights, "decoder_net.skip.weight": like.new_zeros(outputs, head_input),
            "decoder_net.skip.bias": like.new_zeros(outputs)}


def _unchanged(record: dict[str, Any]) -> dict[str, Any]:
    return record


WEIGHT_UPGRADES = {1: _weights_from_format_1, 2: _weights_from_format_2}  # format -> step to the next format
RECORD_UPGRADES = {1: _metrics_from_format_1, 2: _unchanged}


def upgrade_weights(weights: dict[str, torch.Tensor], config: ModelConfig, fmt: int) -> dict[str, torch.Tensor]:
    for step in range(fmt, CONFIG_FORMAT):
        weights = WEIGHT_UPGRADES[step](weights, config)
    return weights


def upgrade_record(record: dict[str, Any], fmt: int) -> dict[str, Any]:
    """A ``metrics.jsonl`` line or ``summary.json`` of format ``fmt`` in today's names."""
    for step in range(fmt, CONFIG_FORMAT):
        record = RECORD_UPGRADES[step](record)
    return record


def run_format(run_dir: Path) -> int:
    """The format number in a run's ``config.json`` (release 0.1 wrote 1)."""
    try:
        raw = read_json(run_dir / CONFIG, "JSON config")
    except VaelabError:
        return CONFIG_FORMAT  # read_config reports the problem
    fmt = raw.get("format", 1) if isinstance(raw, dict) else CONFIG_FORMAT
    return fmt if isinstance(fmt, int) and 1 <= fmt <= CONFIG_FORMAT else CONFIG_FORMAT


def _names_before_conditional_networks(weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights saved before conditional models existed, under today's parameter names.

    Those networks were one ``body`` Sequential each: the encoder [conv, ReLU] * L, Flatten, then the
    dense layers; the decoder its dense layers (mlp) or [dense Sequential, ReLU, Unflatten, transposed
    convs...] (conv). Today the encoder splits into ``features`` (convs) and ``head`` (dense), the
    decoder into ``head`` (dense) and ``body`` (Unflatten and transposed convs). Newer files pass through.
    """
    if not any(name.startswith("encoder_net.body.") for name in weights):
        return weights
    convs = len(config.channels) if config.arch == "conv" else 0
    renamed = {}
    for name, tensor in weights.items():
        net, part, *rest = name.split(".")
        if part == "body" and net == "encoder_net":
            index = int(rest[0])
            rest = ["features", rest[0], *rest[1:]] if index < 2 * convs else ["head", str(index - 2 * convs - 1), *rest[1:]]
            name = ".".join([net, *rest])
        elif part == "body" and net == "decoder_net":
            index = int(rest[0])
            if convs == 0:
                name = ".".join([net, "head", *rest])
            elif index == 0:  # the dense Sequential
                name = ".".join([net, "head", *rest[1:]])
            else:  # ReLU and Unflatten moved out of the front of the body
                name = ".".join([net, "body", str(index - 2), *rest[1:]])
        renamed[name] = tensor
    return renamed


def build_model(config: RunConfig, weights: dict[str, torch.Tensor], source: Path, device: torch.device | str,
                fmt: int = CONFIG_FORMAT) -> VAE:
    """Rebuild the model from its config and load ``weights`` (of run format ``fmt``) strictly
    (an error names ``source``)."""
    model = VAE(config.model)
    weights = upgrade_weights(weights, config.model, fmt)
    check_weights(weights, model.state_dict(), source)
    weights = {name: t.float() if t.dtype == torch.float16 else t for name, t in weights.items()}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise VaelabError(f"{source}: weights do not match {CONFIG} ({' '.join(first)})") from None
    return model.to(device)


def check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path) -> None:
    """The tensors of ``source`` are exactly those the config's model has: the same names, shapes
    and dtypes (``load_state_dict`` would silently convert float64 to float32; float16 where float32 is
    expected is an exported copy, see :func:`export_run`, and widens exactly), and finite values.
    The first difference is a one-line error naming the file and the tensor."""
    missing = [name for name in expected if name not in weights]
    extra = [name for name in weights if name not in expected]
    if missing:
        raise VaelabError(f"{source}: tensor {missing[0]!r} is missing ({len(missing)} in all); "
                          f"the weights do not match {CONFIG}")
    if extra:
        raise VaelabError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} in all); "
                          f"the weights do not match {CONFIG}")
    for name, tensor in weights.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise VaelabError(f"{source}: tensor {name!r} has shape {list(tensor.shape)}, but {CONFIG} "
                              f"needs {list(want.shape)} (was the config edited?)")
        if tensor.dtype != want.dtype and not (tensor.dtype == torch.float16 and want.dtype == torch.float32):
            raise VaelabError(f"{source}: tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}, "
                              f"expected {str(want.dtype).removeprefix('torch.')}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise VaelabError(f"{source}: tensor {name!r} holds NaN or infinite values; the weights are damaged")


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a trained model from a run directory (safetensors + JSON only, never pickle)."""
    path = check_run_dir(run_dir)
    config = read_config(path / CONFIG)
    if config.model.input_shape is None:
        raise VaelabError(f"{path / CONFIG}: model.input_shape is missing (written by vaelab train)")
    weights, _ = read_safetensors(path / MODEL)
    model = build_model(config, weights, path / MODEL, device, run_format(path))
    model.eval()
    return Run(model=model, config=config, path=path, metrics=read_metrics(path))



def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, half: bool = False) -> list[str]:
    """Write a new run directory ``out`` holding what is needed to use and judge the model of ``run_dir``
    (config, weights, metrics, summary, data provenance and, unless ``half``, its evaluations) and
    nothing of its training state: a copy to share, as the model zoo's entries are. Returns the names written.

    ``half`` stores the float32 weights as float16 (half the bytes; loading widens them back exactly,
    so the exported model is the rounded one). Its evaluations are then not copied: they describe the
    float32 weights, and ``vaelab evaluate OUT`` measures the exported model. Written in the current
    run format; ``out`` must not exist yet (or be empty): export never overwrites.
    """
    source = check_run_dir(run_dir)
    target = Path(out)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise VaelabError(f"{target}: already exists; vaelab export writes a new directory")
    run = load(source)
    weights = run.model.state_dict()
    if half:
        limit = torch.finfo(torch.float16).max
        for name, tensor in weights.items():
            if tensor.dtype == torch.float32 and bool((tensor.abs() > limit).any()):
                raise VaelabError(f"{source / MODEL}: tensor {name!r} holds values beyond float16's range "
                                  f"(+-{limit:.0f}); export without --half")
        weights = {name: t.half() if t.dtype == torch.float32 else t for name, t in weights.items()}
    evaluations = [] if half else sorted(
        path for path in source.iterdir()
        if path.is_file() and re.fullmatch(r"evaluation-[\w-]+\.(json|per-example\.safetensors)", path.name)
    )
    target.mkdir(parents=True, exist_ok=True)
    save_config(target, run.config)
    write_safetensors(target / MODEL, weights, {"format": "vaelab-model-1"})
    save_metrics(target, run.metrics)
    written = [CONFIG, MODEL, METRICS]
    for name in (SUMMARY, DATA):
        if (source / name).is_file():
            atomic_write_bytes(target / name, read_file_hashed(source / name, "a JSON file", MAX_JSON_BYTES)[0])
            written.append(name)
    for path in evaluations:
        limit = MAX_SAFETENSORS_BYTES if path.suffix == ".safetensors" else MAX_JSON_BYTES
        atomic_write_bytes(target / path.name, read_file_hashed(path, "an evaluation file", limit)[0])
        written.append(path.name)
    return written
