"""One epoch of training: the hot loop, with no Python per example.

The whole training set sits in one tensor on the device; each epoch draws one permutation and a
batch is the rows at one slice of it (no Dataset, no DataLoader, no collation). Dynamic binarisation
is one ``torch.bernoulli`` per batch. The randomness of a step (binarisation and the noise ``eps``)
is drawn for the whole batch from one generator, so that a resumed run continues bit for bit and the
processes of a distributed run, which each keep their rows of the batch, train exactly as one.
What a batch costs is decided by the model's condition (``models/conditions.py``: the plain
objective, M2, or the missing-covariate bound); the bounds themselves live in ``bounds/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vaelab.config import TrainConfig
from vaelab.data.datasets import binarize
from vaelab.bounds.objectives import OBJECTIVES, BatchSums, Objective
from vaelab.models.vae import VAE
from vaelab.training.callbacks import Callback
from vaelab.training.distributed import Processes

POSTFIX_EVERY = 50  # batches between updates of the running loss shown on the progress bar


@dataclass(frozen=True)
class TrainingData:
    """The training split on the device, and what a step needs to turn a batch of it into a loss."""

    x: torch.Tensor  # [N, ...]
    c: torch.Tensor | None  # the condition of each example (labels [N], covariates [N, K]) or None
    dynamic_binarize: bool
    label_weight: float  # weight of -log q(y|x) per labelled example, or of -log q(c_j|x) per observed covariate
    labelled: torch.Tensor | None = None  # M2: indices of the labelled examples, drawn into every step


class BatchObjective(torch.nn.Module):
    """One step's batch totals as a module's ``forward``, so that DistributedDataParallel can wrap it:
    the bound goes through ``encode``/``decode``/``prior``, not ``VAE.forward``."""

    def __init__(self, model: VAE, data: TrainingData, precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.bf16 = precision == "bf16"

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, eps: torch.Tensor, objective: Objective,
                classify_only: torch.Tensor | None = None) -> BatchSums:
        if x.shape[0] == 0:  # a process with no rows of a short last batch still joins the gradient all-reduce
            zero = sum(p.sum() for p in self.model.parameters()) * 0
            return BatchSums(zero, zero.detach(), zero.detach())
        # bf16: matrix products in bfloat16, everything the model turns into a distribution in fp32.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.condition.batch_sums(self.model, x, c, eps, objective, self.data.label_weight, classify_only)


def learning_rate(config: TrainConfig, epochs_done: float) -> float:
    """The learning rate at a point of training (in epochs, fractional): constant, or a cosine from
    ``lr`` to ``lr_min`` over ``epochs`` (Loshchilov & Hutter 2017, without restarts). A function of
    the position alone, so a resumed run continues on the same curve."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(1.0, epochs_done / config.epochs)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * progress))


def objective_schedule(config: TrainConfig) -> Callable[[float], Objective]:
    """The objective at a point of training (in epochs, fractional): the KL weight warms up linearly."""
    beta = config.beta if config.objective == "beta" else 1.0
    samples = OBJECTIVES[config.objective]().samples(config.iwae_samples)

    def at(epochs_done: float) -> Objective:
        warm = 1.0 if config.warmup_epochs == 0 else min(1.0, epochs_done / config.warmup_epochs)
        return Objective(config.objective, beta * warm, config.free_bits, samples)

    return at


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    batch_size: int,
    generator: torch.Generator,
    objective_at: Callable[[float], Objective],
    epoch: int,
    grad_clip: float | None,
    bar: tqdm,
    lr_at: Callable[[float], float] | None = None,
    callbacks: list[Callback] = (),
    *,
    batch_objective: torch.nn.Module | None = None,
    processes: Processes = Processes(),
) -> dict[str, float]:
    """Epoch number ``epoch`` (1-based) over ``data`` in a fresh random order.

    ``batch_objective`` is :class:`BatchObjective` of ``model``, wrapped in DistributedDataParallel
    when ``processes`` are several; each then trains on its rows of every global batch. For M2
    (``data.labelled``), every step also takes as many labelled examples, cycling through a fresh
    permutation of them each epoch, so that a few labels are seen throughout training.
    Returns the mean per example (over every row trained on) of the minimised ``objective`` and of
    the plain ELBO terms.
    """
    model.train()
    batch_objective = batch_objective or BatchObjective(model, data)
    x = data.x
    n = x.shape[0]
    order = torch.randperm(n, generator=generator, device=x.device)
    labelled = None
    if data.labelled is not None:
        labelled = data.labelled[torch.randperm(data.labelled.numel(), generator=generator, device=x.device)]
    noise_dim = model.latent_size + model.condition.noise_dim(model)
    totals = torch.zeros(4, device=x.device)  # objective, loss, rec, kl: read rarely, so few device syncs
    rows_seen = 0  # rows of the ordinary batches this process trained on (M2's labelled batches only classify)
    steps = math.ceil(n / batch_size)
    for step, start in enumerate(range(0, n, batch_size)):
        streams = [order[start : start + batch_size]]
        b = streams[0].numel()
        if labelled is not None:
            streams.append(labelled[(step * b + torch.arange(b, device=x.device)) % labelled.numel()])
        position = epoch - 1 + step / steps
        objective = objective_at(position)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(position)
        mine = processes.rows(b)  # every process draws the whole batch's randomness; it keeps its rows
        parts = []
        for rows in streams:
            batch = binarize(x[rows], generator) if data.dynamic_binarize else x[rows]
            eps = torch.randn((objective.samples, b, noise_dim), generator=generator, device=x.device)  # [K, B, D]
            parts.append((batch[mine], None if data.c is None else data.c[rows[mine]], eps[:, mine]))
        own, c, eps = parts[0] if len(parts) == 1 else (
            torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts], 1))
        classify_only = None
        if labelled is not None:  # the labelled batch adds only the classification term
            classify_only = torch.arange(own.shape[0], device=x.device) >= parts[0][0].shape[0]
        sums = batch_objective(own, c, eps, objective, classify_only)
        optimizer.zero_grad(set_to_none=True)
        (sums.objective / (b / processes.world_size)).backward()  # DDP averages over processes
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        with torch.no_grad():
            totals += torch.stack((sums.objective, sums.rec + sums.kl, sums.rec, sums.kl))
        rows_seen += parts[0][0].shape[0]
        bar.update(b)
        if step % POSTFIX_EVERY == POSTFIX_EVERY - 1:  # an occasional read keeps the loop free of syncs
            bar.set_postfix(loss=f"{totals[1].item() / max(rows_seen, 1):.2f}", refresh=False)
            rows_now = max(own.shape[0], 1)
            for callback in callbacks:
                callback.on_step((epoch - 1) * steps + step, {"negative_elbo": (sums.rec + sums.kl) / rows_now,
                                                               "rec": sums.rec / rows_now, "kl": sums.kl / rows_now})
    totals = processes.sum(torch.cat((totals, totals.new_tensor([rows_seen]))))
    objective_mean, negative_elbo, rec, kl = (totals[:4] / totals[4]).tolist()
    return {"objective": objective_mean, "negative_elbo": negative_elbo, "rec": rec, "kl": kl}
