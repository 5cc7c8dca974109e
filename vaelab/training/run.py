"""Training: a run from configuration to run directory — maximise the objective with Adam, fast,
reproducibly, resumably.

This module sets a run up (data, model, run directory), loops over epochs (``epoch.py`` is the hot
loop of one epoch), validates, checkpoints and finishes with the test figures. It draws no picture:
callbacks (``callbacks.py``) watch it, and the CLI draws pictures, plots and the report after it
returns. Adam is the fused kernel where the installed torch has one.

Reproducibility: one ``torch.Generator`` seeded from ``train.seed`` drives shuffling, binarisation
and the reparameterisation noise; its state is saved with every checkpoint, so a run resumed from
epoch k continues exactly as if it had never stopped (bit for bit on the same CPU and thread count).

Under ``torchrun`` (``distributed.py``) every process draws the same permutation, binarisation and
noise for each global batch, keeps its own rows of it and lets DistributedDataParallel average the
gradients: the same training as one process, whose ``--batch-size`` is the global batch.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab import rundir
from vaelab.bounds.objectives import OBJECTIVES
from vaelab.config import DEFAULT_EPOCHS, MIN_DEFAULT_STEPS, ConfigError, RunConfig, TrainConfig, default_epochs, read_config
from vaelab.data.datasets import Dataset, Split
from vaelab.data.pipeline import load_data
from vaelab.errors import VaelabError
from vaelab.evaluation.evidence import elbo_averages
from vaelab.models.conditions import condition_for
from vaelab.models.likelihoods import choose_likelihood
from vaelab.models.vae import VAE
from vaelab.training import distributed
from vaelab.training.callbacks import Callback
from vaelab.training.distributed import Processes
from vaelab.training.epoch import BatchObjective, TrainingData, learning_rate, objective_schedule, train_epoch
from vaelab.training.optimizer import flush_subnormal_moments, make_optimizer
from vaelab.training.unread_settings import check_unread_settings

log = logging.getLogger(__name__)

RESUMABLE_SETTINGS = ("epochs", "device", "lr")  # what may change when a run is resumed (metrics.jsonl records lr)
DIVERGENCE_FACTOR = 10.0  # a validation -ELBO this many times the initial model's means the run diverged
EVAL_SEED = 1234  # fixed z-noise for validation/test ELBOs, so epochs are compared on equal terms


def default_out(config: RunConfig) -> Path:
    stem = Path(config.data.dataset).stem or "data"
    return Path("runs") / f"{stem}-{config.model.arch}-{datetime.now():%Y%m%d-%H%M%S}"


def _new_run_dir(out: str | os.PathLike | None, config: RunConfig) -> Path:
    """The directory of a new run: new or empty, or one a run left before its first checkpoint."""
    path = Path(out) if out is not None else default_out(config)
    if path.exists() and not path.is_dir():
        raise VaelabError(f"--out {path}: exists and is not a directory; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not rundir.is_unstarted(path):
        raise VaelabError(
            f"--out {path}: already exists and is not empty; resume it with --resume {path} or choose another --out"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"--out {path}: cannot create the run directory ({exc.strerror})") from None
    rundir.remove_stale_temporaries(path)
    return path


def _seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _build_model(config: RunConfig, device: torch.device) -> VAE:
    """Initialise the weights from ``train.seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = VAE(config.model)
    return model.to(device)


def _starting_weights(config: RunConfig) -> dict[str, torch.Tensor]:
    """``--init-from RUN``: the weights of another run for a new run to start from — fine-tuning on
    other data, or a warm restart with a fresh schedule. Only the same model qualifies (every model
    setting equal), since a weight that fits only by shape would be a silent mix of two models."""
    try:
        source = rundir.load(config.train.init_from)
    except VaelabError as exc:
        raise VaelabError(f"--init-from {exc}") from None
    theirs, ours = source.config.model, config.model
    differing = [f.name for f in fields(theirs) if getattr(theirs, f.name) != getattr(ours, f.name)]
    if differing:
        name = differing[0]
        raise VaelabError(
            f"--init-from {source.path}: its model differs from this run's in {', '.join(differing)} "
            f"({name} {getattr(theirs, name)!r} there, {getattr(ours, name)!r} here); "
            f"give this run the same model, e.g. with --config {source.path / rundir.CONFIG}"
        )
    return source.model.state_dict()


def _check_objective(config: RunConfig, world_size: int) -> None:
    """Bounds with inferred covariates are ELBO-based (``bounds/missing.py``): no IWAE, no free bits.
    Free bits floor the *batch*-mean KL, which no single process of a distributed run sees."""
    entry = OBJECTIVES[config.train.objective]()
    if config.model.infer_missing and (not entry.closed_form_kl or config.train.free_bits > 0):
        setting = "free_bits" if entry.closed_form_kl else "objective"
        raise ConfigError(setting, "is not available when covariates are missing (the M2 / missing-covariate bound is ELBO-based)")
    if world_size > 1 and config.train.free_bits > 0:
        raise ConfigError("free_bits", "is not available with torchrun (it floors the KL of the whole batch, which each process sees only part of)")


def _split_on(split: Split, model: VAE, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A split's data and condition tensors on ``device``."""
    c = model.condition.of(split)
    return split.x.to(device), None if c is None else c.to(device)


def _training_data(config: RunConfig, model: VAE, dataset: Dataset, device: torch.device) -> TrainingData:
    x, c = _split_on(dataset.train, model, device)
    label_weight, labelled = 0.0, None
    if config.model.infer_missing:
        assert c is not None
        label_weight = model.condition.training_weight(config, c)
        if c.dim() == 1:  # labels: M2 draws a labelled batch into every step
            labelled = torch.nonzero(~model.condition.missing(c)).squeeze(1)
    return TrainingData(x=x, c=c, dynamic_binarize=config.data.binarize == "dynamic", label_weight=label_weight,
                        labelled=labelled)


def _apply_speed_options(model: VAE, config: TrainConfig, device: torch.device) -> None:
    """``--compile`` compiles every network in place (weights and their names are unchanged);
    ``--precision bf16`` only warns on CPUs without native bfloat16, where it is emulated and slow."""
    if config.compile:
        for network in model.children():
            network.compile()
    if config.precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16/AMX), so it is emulated "
                    "and slower than fp32")


def _check_divergence(record: dict[str, Any], initial_loss: float, epoch: int, run_dir: Path) -> None:
    """Stop a run whose loss is not finite or has grown far beyond the initial model's, saying truly
    what is kept and how to go on (``--resume`` accepts a new ``--lr``)."""
    values = [v for k, v in record.items() if k != "epoch" and isinstance(v, float)]
    loss = record["val_negative_elbo"]
    if all(math.isfinite(v) for v in values) and loss <= DIVERGENCE_FACTOR * abs(initial_loss):
        return
    why = "not finite" if not math.isfinite(loss) else f"{loss:.4g} nats, over {DIVERGENCE_FACTOR:g}x the initial {initial_loss:.4g}"
    if epoch > 1:
        kept = (f"{run_dir} keeps the checkpoint of epoch {epoch - 1}; continue it with a lower learning rate: "
                f"vaelab train --resume {run_dir} --lr <smaller>")
    else:
        kept = (f"nothing was saved; start again with a lower --lr (or --grad-clip), "
                f"the same --out {run_dir} is accepted")
    raise VaelabError(f"training diverged in epoch {epoch} (validation -ELBO {why}); {kept}")


def _describe_provenance(provenance: Any) -> str:
    if isinstance(provenance, str):
        return provenance
    if not provenance:
        return "built in memory (no files)"
    first, digest = provenance[0]
    more = f" and {len(provenance) - 1} more files" if len(provenance) > 1 else ""
    return f"{first} (sha256 {digest[:12]}…){more}; every file and checksum in data.json"


def _finish_run(run_dir: Path, model: VAE, config: RunConfig, metrics: list[dict[str, Any]], best_epoch: int,
                stopped_early: bool, test_x: torch.Tensor, test_c: torch.Tensor | None) -> None:
    """Write the test-set figures of a finished run (``summary.json``)."""
    device = test_x.device
    test_terms = elbo_averages(model, test_x, config.train.batch_size, _seeded_generator(EVAL_SEED, device), test_c)
    summary = {
        "epochs": metrics[-1]["epoch"],
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        **{f"test_{k}": v for k, v in test_terms.items()},
        "n_test": int(test_x.shape[0]),
    }
    rundir.save_summary(run_dir, summary)
    log.info("test -ELBO %.2f nats/example (rec %.2f, KL %.2f)", summary["test_negative_elbo"], summary["test_rec"], summary["test_kl"])


def train(
    config: RunConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    callbacks: list[Callback] = (),
    **settings: Any,
) -> rundir.Run:
    """Train a VAE and return it with its run directory.

    ``settings`` override ``config`` by name, e.g. ``train(dataset="fashion-mnist", latent_dim=2)``.
    With ``resume=RUN`` the run continues from its last finished epoch; only ``epochs`` (to train
    longer) and ``device`` may then be changed. ``init_from=RUN`` starts a new run from RUN's weights (the
    same model) instead of the seeded initialisation. ``callbacks`` (:class:`~vaelab.training.callbacks.Callback`)
    watch the run on rank 0. Started by torchrun, every process trains its share of each batch and
    rank 0 alone writes the run directory. Pictures: ``vaelab.views.run_views.write_run_views(run)``.
    """
    run_dir = None
    if resume is not None:
        run_dir = rundir.check_run_dir(resume)
        if settings.get("epochs", 0) is None:  # the default epochs of a resumed run are its own
            del settings["epochs"]
        fixed = set(settings) - set(RESUMABLE_SETTINGS)
        if fixed or config is not None:
            raise VaelabError(
                f"{run_dir}: a resumed run keeps its config; only {', '.join(RESUMABLE_SETTINGS)} can change "
                f"(got {', '.join(sorted(fixed)) or 'a config'})"
            )
        config = read_config(run_dir / rundir.CONFIG).with_overrides(**settings)
        state = rundir.load_training_state(run_dir)
        done = state.finished or state.epoch >= config.train.epochs
        if done and (run_dir / rundir.SUMMARY).exists():  # else it was stopped before its summary: finish it
            rundir.remove_stale_temporaries(run_dir)
            raise VaelabError(
                f"{run_dir}: already trained for {state.epoch} epochs"
                + (" (stopped early)" if state.finished and state.epoch < config.train.epochs else "")
                + "; pass a larger --epochs to train longer"
            )
    else:
        config = (config or RunConfig()).with_overrides(**settings)
        state = None
    with distributed.session(config.train.device) as processes:
        return _train(config, state, run_dir, out, processes, progress=progress, callbacks=list(callbacks))


def _train(
    config: RunConfig,
    state: rundir.TrainingState | None,
    run_dir: Path | None,
    out: str | os.PathLike | None,
    processes: Processes,
    *,
    progress: bool,
    callbacks: list[Callback],
) -> rundir.Run:
    """:func:`train` once the config is settled: continue ``state`` in ``run_dir``, or start a new run
    in ``out`` (a default name if None)."""
    device = processes.device
    dataset = load_data(config)
    condition = condition_for(config.model)
    if config.model.likelihood == "auto":
        name, reason = choose_likelihood(dataset.train.x, config.data.binarize)
        log.info("likelihood: %s, because %s", name, reason)
        config = replace(config, model=replace(config.model, likelihood=name))
    config = replace(config, model=replace(config.model, input_shape=dataset.shape, **condition.model_settings(dataset)))
    if state is None:
        check_unread_settings(config)
    if config.train.epochs is None:
        n, batch = dataset.train.x.shape[0], config.train.batch_size
        epochs = default_epochs(n, batch)
        if epochs == DEFAULT_EPOCHS:
            log.info("epochs: %d (the default; %s steps of batch %d)", epochs, f"{epochs * math.ceil(n / batch):,}", batch)
        else:
            log.info("epochs: %d, because %s training examples in batches of %d need %d epochs for %s steps "
                     "(--epochs sets it)", epochs, f"{n:,}", batch, epochs, f"{MIN_DEFAULT_STEPS:,}")
        config = replace(config, train=replace(config.train, epochs=epochs))
    _check_objective(config, processes.world_size)
    if dataset.train.x.shape[0] == 0:
        raise VaelabError(f"{config.data.dataset}: the training split is empty")

    model = _build_model(config, device)
    x = dataset.train.x
    warning = model.likelihood.describe(config.data.binarize, binary_data=bool(((x == 0) | (x == 1)).all()))
    if warning:
        log.warning(warning)
    optimizer = make_optimizer(model, config.train.lr)
    generator = _seeded_generator(config.train.seed, device)
    metrics: list[dict[str, Any]] = []
    best_loss, best_epoch, best_model = math.inf, 0, None
    if state is not None:
        try:
            model.load_state_dict(rundir.upgrade_weights(state.model, config.model, rundir.run_format(run_dir)))
            optimizer.load_state_dict(state.optimizer)
            flush_subnormal_moments(optimizer)  # a checkpoint of an older vaelab may hold millions
            generator.set_state(state.generator)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise VaelabError(f"{run_dir / rundir.TRAINING_STATE}: does not match {rundir.CONFIG} ({first})") from None
        metrics = state.metrics if state.metrics is not None else [m for m in rundir.read_metrics(run_dir) if m["epoch"] <= state.epoch]
        best_loss, best_epoch, best_model = state.best_loss, state.best_epoch, state.best_model
        start_epoch = state.epoch
        initial_loss = state.initial_loss
        if processes.is_main:  # the checkpoint is the truth: rewrite what a kill may have left behind it
            rundir.remove_stale_temporaries(run_dir)
            rundir.save_model(run_dir, model)
            rundir.save_metrics(run_dir, metrics)
    else:
        if config.train.init_from is None:
            model.initialise(dataset.train.x.to(device))
            condition.initialise(model, dataset.train)
        else:
            model.load_state_dict(_starting_weights(config))
        run_dir = distributed.from_main(processes, lambda: _new_run_dir(out, config))
        start_epoch = 0
        initial_loss = None
    assert run_dir is not None
    if processes.is_main:
        rundir.save_config(run_dir, config)
        rundir.save_provenance(run_dir, config.data.dataset, dataset.provenance)
        log.info("run directory: %s", run_dir)
        log.info("data: %s", _describe_provenance(dataset.provenance))
    train_cfg = config.train
    data = _training_data(config, model, dataset, device)
    _apply_speed_options(model, train_cfg, device)
    batch_objective = distributed.wrap(BatchObjective(model, data, train_cfg.precision), processes)
    val_x, val_c = _split_on(dataset.val, model, device)
    test_x, test_c = _split_on(dataset.test, model, device)
    callbacks = callbacks if processes.is_main else []
    for callback in callbacks:
        callback.on_start(run_dir, model, test_x, test_c)
    objective_at = objective_schedule(train_cfg)
    if initial_loss is None:  # what divergence is measured against: the model as initialised
        initial_loss = elbo_averages(model, val_x, train_cfg.batch_size, _seeded_generator(EVAL_SEED, device), val_c)["negative_elbo"]
    n = data.x.shape[0]
    stopped_early = False
    bar = tqdm(
        total=train_cfg.epochs * n, initial=start_epoch * n, unit="ex", unit_scale=True,
        disable=not (progress and processes.is_main), dynamic_ncols=True, desc="train",
    )
    try:
        for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
            best = f", best val -ELBO {best_loss:.2f} (epoch {best_epoch})" if best_epoch else ""
            bar.set_description(f"epoch {epoch}/{train_cfg.epochs} ({train_cfg.epochs - epoch + 1} left{best})")
            started = time.perf_counter()
            train_terms = train_epoch(
                model, optimizer, data, train_cfg.batch_size, generator, objective_at, epoch, train_cfg.grad_clip, bar,
                lambda position: learning_rate(train_cfg, position), callbacks,
                batch_objective=batch_objective, processes=processes,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            flush_subnormal_moments(optimizer)
            val_terms = elbo_averages(model, val_x, train_cfg.batch_size, _seeded_generator(EVAL_SEED, device), val_c)
            record = {"epoch": epoch, **{f"train_{k}": v for k, v in train_terms.items()},
                      **{f"val_{k}": v for k, v in val_terms.items()}, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": seconds}
            _check_divergence(record, initial_loss, epoch, run_dir)
            metrics.append(record)
            for callback in callbacks:
                callback.on_epoch(epoch, record, model)
            if record["val_negative_elbo"] < best_loss:
                best_loss, best_epoch = record["val_negative_elbo"], epoch
                if train_cfg.early_stopping is not None:
                    best_model = copy.deepcopy(model.state_dict())
            stopped_early = (
                train_cfg.early_stopping is not None and epoch - best_epoch >= train_cfg.early_stopping
            )
            if processes.is_main:
                rundir.save_training_state(run_dir, rundir.TrainingState(
                    epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    generator=generator.get_state(), best_loss=best_loss, best_epoch=best_epoch,
                    best_model=best_model, finished=stopped_early, metrics=metrics, initial_loss=initial_loss,
                ))
                rundir.save_model(run_dir, model)
                rundir.save_metrics(run_dir, metrics)
                # Written after the checkpoint, so that an epoch's line on screen means the epoch is saved.
                bar.write(
                    f"epoch {epoch}: train -ELBO {record['train_negative_elbo']:.2f}  val -ELBO {record['val_negative_elbo']:.2f}  "
                    f"(rec {record['val_rec']:.2f}, KL {record['val_kl']:.2f})  {seconds:.2f}s"
                )
            if stopped_early:
                if processes.is_main:
                    bar.write(f"early stopping: no better validation loss since epoch {best_epoch}")
                break
    except KeyboardInterrupt:
        bar.close()
        if processes.is_main:
            log.warning("interrupted; resume with: vaelab train --resume %s", run_dir)
        raise
    finally:
        bar.close()
        for callback in callbacks:
            callback.on_end()

    if best_model is not None:
        model.load_state_dict(best_model)
        if processes.is_main:
            rundir.save_model(run_dir, model)
    if processes.is_main:
        _finish_run(run_dir, model, config, metrics, best_epoch, stopped_early, test_x, test_c)
    model.eval()
    return rundir.Run(model=model, config=config, path=run_dir, metrics=metrics)
