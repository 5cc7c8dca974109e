"""Training: maximise the ELBO with Adam, fast, reproducibly, resumably.

Speed comes from keeping the hot loop free of Python per example: the whole training set sits in one
tensor on the device, each epoch draws one permutation, and a batch is the rows at one slice of it
(no Dataset, no DataLoader, no collation). Dynamic binarisation is one ``torch.bernoulli`` per batch.
The loss is computed on logits and Adam is the fused kernel where the installed torch has one.

Reproducibility: one ``torch.Generator`` seeded from ``train.seed`` drives shuffling, binarisation
and the reparameterisation noise; its state is saved with every checkpoint, so a run resumed from
epoch k continues exactly as if it had never stopped (bit for bit on the same CPU and thread count).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab import rundir
from vaelab.config import RunConfig, read_config
from vaelab.datasets import binarize
from vaelab.errors import VaelabError
from vaelab.evaluation import elbo_averages
from vaelab.model import VAE
from vaelab.objectives import elbo_sums
from vaelab.pipeline import load_data, resolve_device
from vaelab.views import image_grid, loss_curve_figure, reconstruction_grid, save_figure, save_image

log = logging.getLogger(__name__)

RESUMABLE_SETTINGS = ("epochs", "device")  # what may change when a run is resumed
EVAL_SEED = 1234  # fixed z-noise for validation/test ELBOs, so epochs are compared on equal terms
PICTURE_SEED = 0
POSTFIX_EVERY = 50  # batches between updates of the running loss shown on the progress bar


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, as the fused single kernel where this torch supports it on the model's device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def default_out(config: RunConfig) -> Path:
    stem = Path(config.data.dataset).stem or "data"
    return Path("runs") / f"{stem}-{config.model.arch}-{datetime.now():%Y%m%d-%H%M%S}"


def _new_run_dir(out: str | os.PathLike | None, config: RunConfig) -> Path:
    path = Path(out) if out is not None else default_out(config)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise VaelabError(
            f"{path}: already exists and is not empty; resume it with --resume {path} or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
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


def _warn_about_likelihood(config: RunConfig) -> None:
    if config.model.likelihood == "bernoulli" and config.data.binarize == "none":
        log.warning(
            "bernoulli likelihood on grey intensities: its log_prob is minus the binary cross-entropy, "
            "not a normalised likelihood (use --binarize dynamic, or --likelihood cbernoulli)"
        )


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    dynamic_binarize: bool,
    grad_clip: float | None,
    bar: tqdm,
) -> dict[str, float]:
    """One pass over ``x: [N, ...]`` in a fresh random order; returns mean loss/rec/kl per example."""
    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator, device=x.device)
    totals = torch.zeros(3, device=x.device)  # sums of loss, rec, kl: read rarely, so few device syncs
    for step, start in enumerate(range(0, n, batch_size)):
        batch = x[order[start : start + batch_size]]
        if dynamic_binarize:
            batch = binarize(batch, generator)
        rec, kl = elbo_sums(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        ((rec + kl) / batch.shape[0]).backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        with torch.no_grad():
            totals += torch.stack((rec + kl, rec, kl))
        bar.update(batch.shape[0])
        if step % POSTFIX_EVERY == POSTFIX_EVERY - 1:  # an occasional read keeps the loop free of syncs
            bar.set_postfix(loss=f"{totals[0].item() / (start + batch.shape[0]):.2f}", refresh=False)
    loss, rec, kl = (totals / n).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


def _write_pictures(run_dir: Path, model: VAE, metrics: list[dict[str, Any]], test_x: torch.Tensor) -> None:
    model.eval()
    device = next(model.parameters()).device
    samples = model.sample(64, generator=_seeded_generator(PICTURE_SEED, device))
    if samples.dim() == 4:  # pictures need images; tabular runs get only the curve
        save_image(image_grid(samples.clamp(0, 1).cpu()), run_dir / rundir.SAMPLES)
        inputs = test_x[:32]
        save_image(reconstruction_grid(inputs.cpu(), model.reconstruct(inputs).clamp(0, 1).cpu()), run_dir / rundir.RECONSTRUCTIONS)
    if metrics:
        save_figure(loss_curve_figure(metrics), run_dir / rundir.LOSS_CURVE)


def train(
    config: RunConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    **settings: Any,
) -> rundir.Run:
    """Train a VAE and return it with its run directory.

    ``settings`` override ``config`` by name, e.g. ``train(dataset="fashion-mnist", latent_dim=2)``.
    With ``resume=RUN`` the run continues from its last finished epoch; only ``epochs`` (to train
    longer) and ``device`` may then be changed.
    """
    if resume is not None:
        run_dir = rundir.check_run_dir(resume)
        fixed = set(settings) - set(RESUMABLE_SETTINGS)
        if fixed or config is not None:
            raise VaelabError(
                f"{run_dir}: a resumed run keeps its config; only {', '.join(RESUMABLE_SETTINGS)} can change "
                f"(got {', '.join(sorted(fixed)) or 'a config'})"
            )
        config = read_config(run_dir / rundir.CONFIG).with_overrides(**settings)
        state = rundir.load_training_state(run_dir)
        if state.finished or state.epoch >= config.train.epochs:
            raise VaelabError(
                f"{run_dir}: already trained for {state.epoch} epochs"
                + (" (stopped early)" if state.finished and state.epoch < config.train.epochs else "")
                + "; pass a larger --epochs to train longer"
            )
    else:
        config = (config or RunConfig()).with_overrides(**settings)
        state = None

    device = resolve_device(config.train.device)
    dataset = load_data(config)
    config = replace(config, model=replace(config.model, input_shape=dataset.shape))
    _warn_about_likelihood(config)
    if dataset.train.x.shape[0] == 0:
        raise VaelabError(f"{config.data.dataset}: the training split is empty")

    model = _build_model(config, device)
    optimizer = make_optimizer(model, config.train.lr)
    generator = _seeded_generator(config.train.seed, device)
    metrics: list[dict[str, Any]] = []
    best_loss, best_epoch, best_model = math.inf, 0, None
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.generator)
        metrics = [m for m in rundir.read_metrics(run_dir) if m["epoch"] <= state.epoch]
        best_loss, best_epoch, best_model = state.best_loss, state.best_epoch, state.best_model
        start_epoch = state.epoch
    else:
        model.initialise_output_bias(dataset.train.x.mean(0))
        run_dir = _new_run_dir(out, config)
        start_epoch = 0
    rundir.save_config(run_dir, config)
    log.info("run directory: %s", run_dir)

    x_train = dataset.train.x.to(device)
    x_val = dataset.val.x.to(device)
    x_test = dataset.test.x.to(device)
    train_cfg = config.train
    n = x_train.shape[0]
    stopped_early = False
    bar = tqdm(
        total=train_cfg.epochs * n, initial=start_epoch * n, unit="ex", unit_scale=True,
        disable=not progress, dynamic_ncols=True, desc="train",
    )
    try:
        for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
            bar.set_description(f"epoch {epoch}/{train_cfg.epochs}")
            started = time.perf_counter()
            train_terms = train_epoch(
                model, optimizer, x_train, train_cfg.batch_size, generator,
                config.data.binarize == "dynamic", train_cfg.grad_clip, bar,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            val_terms = elbo_averages(model, x_val, train_cfg.batch_size, _seeded_generator(EVAL_SEED, device))
            record = {"epoch": epoch, **{f"train_{k}": v for k, v in train_terms.items()},
                      **{f"val_{k}": v for k, v in val_terms.items()}, "seconds": seconds}
            if not all(math.isfinite(v) for v in (*train_terms.values(), *val_terms.values())):
                raise VaelabError(
                    f"training diverged in epoch {epoch} (loss {train_terms['loss']}); lower --lr or set "
                    f"--grad-clip; {run_dir} keeps the checkpoint of epoch {epoch - 1}"
                )
            metrics.append(record)
            bar.write(
                f"epoch {epoch}: train -ELBO {record['train_loss']:.2f}  val -ELBO {record['val_loss']:.2f}  "
                f"(rec {record['val_rec']:.2f}, KL {record['val_kl']:.2f})  {seconds:.2f}s"
            )
            if record["val_loss"] < best_loss:
                best_loss, best_epoch = record["val_loss"], epoch
                if train_cfg.early_stopping is not None:
                    best_model = copy.deepcopy(model.state_dict())
            stopped_early = (
                train_cfg.early_stopping is not None and epoch - best_epoch >= train_cfg.early_stopping
            )
            rundir.save_training_state(run_dir, rundir.TrainingState(
                epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                generator=generator.get_state(), best_loss=best_loss, best_epoch=best_epoch,
                best_model=best_model, finished=stopped_early,
            ))
            rundir.save_model(run_dir, model)
            rundir.save_metrics(run_dir, metrics)
            if stopped_early:
                bar.write(f"early stopping: no better validation loss since epoch {best_epoch}")
                break
    except KeyboardInterrupt:
        bar.close()
        log.warning("interrupted; resume with: vaelab train --resume %s", run_dir)
        with contextlib.suppress(Exception):
            _write_pictures(run_dir, model, metrics, x_test)
        raise
    finally:
        bar.close()

    if best_model is not None:
        model.load_state_dict(best_model)
        rundir.save_model(run_dir, model)
    test_terms = elbo_averages(model, x_test, train_cfg.batch_size, _seeded_generator(EVAL_SEED, device))
    summary = {
        "epochs": metrics[-1]["epoch"],
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        **{f"test_{k}": v for k, v in test_terms.items()},
        "n_test": int(x_test.shape[0]),
    }
    rundir.save_summary(run_dir, summary)
    _write_pictures(run_dir, model, metrics, x_test)
    log.info("test -ELBO %.2f nats/example (rec %.2f, KL %.2f)", summary["test_loss"], summary["test_rec"], summary["test_kl"])
    model.eval()
    return rundir.Run(model=model, config=config, path=run_dir, metrics=metrics)
