"""Evaluation of a trained model on a data split: the evidence, honestly estimated.

log p(x) is intractable for a VAE; :func:`evaluate` reports the two standard bounds on it:

- the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)), with the reconstruction term averaged over the same
  K samples and the KL in closed form;
- the importance-weighted bound IW_K = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x)
  (Burda et al. 2016), which rises towards log p(x) as K grows; its negative is the NLL that papers
  report (K = 5000 is the literature's standard).

Every figure comes from the one estimator (``bounds/estimator.py``) through the model's public
distributions (``encode``, ``decode``, ``prior``), so evaluation and training describe the same model
and the same likelihood. The K samples of a batch
of examples go through the decoder as one ``[K_chunk, B, ...]`` batch; K is processed in chunks with
a running log-sum-exp, so memory is bounded for any K.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution
from tqdm.auto import tqdm

from vaelab import rundir
from vaelab.bounds.estimator import elbo, evaluation_terms_at
from vaelab.data.datasets import Split
from vaelab.data.pipeline import load_data
from vaelab.errors import VaelabError
from vaelab.evaluation.comparison import example_fingerprints, per_example_path, save_per_example
from vaelab.evaluation.latents import ACTIVE_UNIT_THRESHOLD, kl_per_dim
from vaelab.evaluation.partial import Batches, PartialEvaluation, evaluation_key
from vaelab.fileio import atomic_write_json
from vaelab.models.vae import VAE
from vaelab.training.distributed import Processes, session

log = logging.getLogger(__name__)

BATCH_SEED_STRIDE = 1_000_003  # seed of batch b: seed * stride + b (stride prime, above any batch count)
DEFAULT_MAX_FLOATS = 2**25  # decoder activations per chunk (~128 MB of float32): the memory bound
# The largest single decoder output of a chunk: 16 MB of float32, under glibc's 32 MB ceiling for
# serving an allocation from memory it keeps. A larger buffer is mapped fresh from the kernel for
# every chunk and its pages faulted in and zeroed on first touch, which cost evaluation 1.2-1.4x
# (BENCHMARKS.md, evaluation speed).
MAX_BUFFER_FLOATS = 2**22
EXAMPLES_PER_BATCH = 256
# ``evaluate(compile=None)`` compiles when it decodes at least this many samples (10,000 images at
# K >= 1,678): compiling takes 10-50 s and saves 2-15 us per sample (BENCHMARKS.md, evaluation speed;
# 2 us for the MLP VAE on one thread), so below this a short evaluation could wait longer for the
# compiler than it gains.
COMPILE_MIN_SAMPLES = 2**24


@torch.no_grad()
def elbo_averages(
    model: VAE, x: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean negative ELBO, reconstruction term (``rec``) and KL (``kl``) over ``x``, in nats.

    One reparameterised z per example, as in training; pass a seeded ``generator`` for figures that
    are comparable across epochs. Conditional models take the condition ``c`` of every example.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        terms = elbo(model, x[start : start + batch_size], generator, None if c is None else c[start : start + batch_size])
        totals += torch.stack((terms.negative_elbo.sum(), terms.rec.sum(), terms.kl.sum()))
    model.train(was_training)
    negative_elbo, rec, kl = (totals / max(x.shape[0], 1)).tolist()
    return {"negative_elbo": negative_elbo, "rec": rec, "kl": kl}


def _check_complete(model: VAE, c: torch.Tensor) -> None:
    if bool(model.condition.missing(c).any()):
        raise VaelabError("evaluation of log p(x|c) needs every covariate observed; this split has missing ones")


def decoder_output_sizes(model: VAE) -> list[int]:
    """The floats each layer of the decoder produces for one z (every leaf module's output)."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.decoder_net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            like = {"device": model.device, "dtype": model.dtype}
            condition = torch.zeros(1, model.condition_dim, **like) if model.conditional else None
            model.decoder_net(torch.zeros(1, model.decoder_net.latent_dim, **like), condition)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes or [1]


def chunk_samples(model: VAE, batch: int, iw_samples: int, max_floats: int = DEFAULT_MAX_FLOATS) -> int:
    """Samples per image decoded at once for ``batch`` images: all ``iw_samples`` if they fit, else as
    many as keep the decoder's activations within ``max_floats`` and its largest output within
    :data:`MAX_BUFFER_FLOATS`."""
    sizes = decoder_output_sizes(model)
    fits = min(max_floats // (batch * sum(sizes)), MAX_BUFFER_FLOATS // (batch * max(sizes)))
    return max(1, min(iw_samples, fits))


def chunk_terms(model: VAE, x: torch.Tensor, c: torch.Tensor | None, q: Distribution, p: Distribution,
                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of samples z = reparameterize(q, eps), ``eps: [k, B, latent_size]``, reduced over them:
    log sum_k w_k, sum_k log p(x|z_k, c) (``[B]`` each) and each layer's reported KL summed, ``[L, B]``.

    The importance weights use log q - log p at each sample; the KL to report is the closed form where
    both factors are Gaussian. Everything between the noise and these sums (the decoder, the
    likelihood's reductions, a mixture prior's log-sum-exp) is this one function: the unit that
    :class:`ChunkStep` compiles."""
    terms, reported_kl = evaluation_terms_at(model, x, c, q, p, eps)
    return (torch.logsumexp(terms.log_weights, dim=0), terms.log_px_z.sum(0),
            torch.stack([kl.sum(0) for kl in reported_kl]))


def compiles_by_default(examples: int, iw_samples: int) -> bool:
    """Whether ``evaluate(compile=None)`` compiles: when it decodes at least :data:`COMPILE_MIN_SAMPLES`."""
    return examples * iw_samples >= COMPILE_MIN_SAMPLES


class ChunkStep:
    """:func:`chunk_terms`, compiled with ``torch.compile`` or not.

    Compiled, the activations, the likelihood's reductions and the log-sum-exps run as a few fused
    loops between the networks' products instead of one pass over memory each: 1.1-1.8x faster
    evaluation at the same figures up to float rounding (BENCHMARKS.md, evaluation speed). Shapes are
    static: a last, smaller batch or chunk compiles once more. If compiling fails (a machine without a
    C++ compiler, an operation the compiler does not support), the evaluation goes on uncompiled with
    a warning: both compute the same function.
    """

    def __init__(self, compile: bool) -> None:
        self.compiled = compile
        self._step = torch.compile(chunk_terms, dynamic=False) if compile else chunk_terms

    def __call__(self, model: VAE, x: torch.Tensor, c: torch.Tensor | None, q: Distribution, p: Distribution,
                 eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.compiled:
            try:
                return self._step(model, x, c, q, p, eps)
            except Exception as error:  # any compiler failure: the uncompiled step is the same function
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                log.warning("torch.compile failed (%s); evaluating uncompiled", reason[:200])
                self.compiled, self._step = False, chunk_terms
        return self._step(model, x, c, q, p, eps)


@torch.no_grad()
def importance_weighted_terms(
    model: VAE, x: torch.Tensor, iw_samples: int, generator: torch.Generator | None, sample_chunk: int,
    c: torch.Tensor | None = None, step: ChunkStep | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example IW_K, E_q[log p(x|z, c)], KL and KL of each layer (over the same K samples), ``[B]``.

    Samples go through ``step`` (:func:`chunk_terms`, uncompiled unless given) ``sample_chunk`` at a
    time; IW_K is accumulated with a running log-sum-exp. The KL is the closed form where it exists.
    """
    step = step or ChunkStep(compile=False)
    batch = x.shape[0]
    q, p = model.encode(x, c), model.prior_for(c)
    log_sum_w = torch.full((batch,), -math.inf, device=x.device, dtype=model.dtype)
    sum_log_px_z = torch.zeros(batch, device=x.device, dtype=model.dtype)
    sum_layer_kl = torch.zeros(model.layers, batch, device=x.device, dtype=model.dtype)
    for start in range(0, iw_samples, sample_chunk):
        k = min(sample_chunk, iw_samples - start)
        eps = torch.randn(k, batch, model.latent_size, generator=generator, device=x.device, dtype=model.dtype)
        chunk_log_sum_w, chunk_log_px_z, chunk_layer_kl = step(model, x, c, q, p, eps)
        log_sum_w = torch.logaddexp(log_sum_w, chunk_log_sum_w)
        sum_log_px_z += chunk_log_px_z
        sum_layer_kl += chunk_layer_kl
    layer_kl = sum_layer_kl / iw_samples
    return {
        "iw": log_sum_w - math.log(iw_samples),
        "log_px_z": sum_log_px_z / iw_samples,
        "kl": layer_kl.sum(0),
        "layer_kl": layer_kl.T,  # [B, L]
        "posterior_mean": q.mean,
    }


@torch.no_grad()
def evaluate(
    model: VAE,
    data: Any,
    iw_samples: int = 5000,
    *,
    seed: int = 0,
    progress: bool = False,
    max_floats: int = DEFAULT_MAX_FLOATS,
    c: torch.Tensor | None = None,
    processes: Processes = Processes(),
    per_example: bool = False,
    partial: PartialEvaluation | None = None,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Negative ELBO, IW_K negative log-likelihood, bits/dim, KL, active units of ``model`` on ``data``.

    ``data`` is a tensor ``[N, *input_shape]`` or a dataset split (whose labels or covariates then
    condition a conditional model). Conditional models are scored on log p(x|c), with ``c`` taken
    from the split unless given. Losses are nats per example, lower is better for ``negative_elbo``
    and ``nll``. ``bits_per_dim`` is a code length only when the likelihood is a probability of
    discrete values (``discrete_likelihood``); otherwise it is a density in bits and is labelled so.
    ``seed`` fixes the importance samples: batch b of 256 examples draws them from a generator seeded
    by (seed, b), so the figures do not depend on how the batches are shared out. Under torchrun
    (``processes``) each process evaluates every world_size-th batch and all gather the per-example
    terms: the result equals one process's up to float rounding. ``per_example`` adds
    ``"per_example"``: each example's ``nll`` and ``negative_elbo``, ``[N]`` tensors (paired comparisons
    of two models on the same images, ``evaluation/comparison.py``). With ``partial`` the finished
    batches are kept on disk as they come and those a previous, interrupted call kept are not computed
    again (``evaluation/partial.py``). ``compile`` runs each chunk of samples through ``torch.compile``
    (:class:`ChunkStep`; same figures up to float rounding); ``None`` compiles when this process decodes
    at least :data:`COMPILE_MIN_SAMPLES` samples, where the compiler's time is repaid.
    """
    x = getattr(data, "x", data)
    if c is None and model.conditional and isinstance(data, Split):
        c = model.condition.of(data)
    if c is not None:
        _check_complete(model, c)
        c = c.to(model.device)
    if iw_samples < 1:
        raise ValueError(f"iw_samples must be >= 1, got {iw_samples}")
    n = x.shape[0]
    assert n > 0, "evaluate needs at least one example"
    device = model.device
    x = x.to(device)
    dims = math.prod(x.shape[1:])
    generator = torch.Generator(device=device)
    batch = min(n, EXAMPLES_PER_BATCH)
    samples_per_chunk = chunk_samples(model, batch, iw_samples, max_floats)

    was_training = model.training
    model.eval()
    started = time.perf_counter()
    mine: list[tuple[int, dict[str, torch.Tensor]]] = []
    finished = _finished_batches(partial, processes, model, x, c, iw_samples=iw_samples, seed=seed, batch=batch,
                                 sample_chunk=samples_per_chunk)
    starts = [begin for begin in range(0, n, batch) if begin not in finished][processes.rank :: processes.world_size]
    mine_examples = sum(min(batch, n - begin) for begin in starts)
    step = ChunkStep(compiles_by_default(mine_examples, iw_samples) if compile is None else compile)
    show = progress and processes.is_main
    with tqdm(total=len(starts) * batch, unit="ex", disable=not show, desc=f"IW_{iw_samples}", dynamic_ncols=True) as bar:
        try:
            for begin in starts:
                generator.manual_seed(seed * BATCH_SEED_STRIDE + begin // batch)
                terms = importance_weighted_terms(
                    model, x[begin : begin + batch], iw_samples, generator, samples_per_chunk,
                    None if c is None else c[begin : begin + batch], step,
                )
                mine.append((begin, {key: value.cpu() for key, value in terms.items()}))
                if partial is not None:
                    partial.record(*mine[-1])
                bar.update(min(batch, n - begin))
        finally:  # finished, interrupted or failed: what is done is on disk
            if partial is not None:
                partial.save()
    model.train(was_training)
    seconds = time.perf_counter() - started
    parts = sorted(processes.gather_objects(mine) + list(finished.items()), key=lambda part: part[0])
    terms = {key: torch.cat([part[1][key] for part in parts]) for key in parts[0][1]}
    nll_per_example = -terms["iw"]
    nll = nll_per_example.mean().item()
    reconstruction = -terms["log_px_z"].mean().item()
    kl = terms["kl"].mean().item()
    means = terms["posterior_mean"]
    mean_variance = means.var(dim=0, unbiased=True) if n > 1 else torch.zeros_like(means[0])
    per_example_terms = {"nll": nll_per_example, "negative_elbo": terms["kl"] - terms["log_px_z"]}
    return {
        "negative_elbo": reconstruction + kl,
        "nll": nll,
        "nll_standard_error": (nll_per_example.std().item() / math.sqrt(n)) if n > 1 else 0.0,
        "iw_samples": iw_samples,
        "bits_per_dim": nll / (dims * math.log(2)),
        "discrete_likelihood": bool(model.likelihood.discrete),
        "kl": kl,
        "kl_per_layer": terms["layer_kl"].mean(0).tolist(),
        "rec": reconstruction,
        "active_units": int((mean_variance > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": model.latent_size,
        "conditioned_on": model.condition.name,
        "kl_per_dim": kl_per_dim(model, x, c).tolist(),
        "posterior_mean_variance": mean_variance.tolist(),
        "n": n,
        "seconds": seconds,
        "compiled": step.compiled,
        **({"per_example": per_example_terms} if per_example else {}),
    }


def _finished_batches(partial: PartialEvaluation | None, processes: Processes, model: VAE, x: torch.Tensor,
                      c: torch.Tensor | None, **plan: int) -> Batches:
    """The batches an interrupted evaluation of the same model, images and ``plan`` kept: those that
    every process read (so that all of them share out the same remaining batches)."""
    if partial is None:
        return {}
    kept = partial.load(evaluation_key(model, x, c, **plan))
    agreed = set.intersection(*(set(starts) for starts in processes.gather_objects([sorted(kept)])))
    finished = {begin: kept[begin] for begin in sorted(agreed)}
    if finished and processes.is_main:
        done = sum(terms["iw"].shape[0] for terms in finished.values())
        log.info("resuming: %d of %d examples were evaluated before; computing the rest", done, x.shape[0])
    return finished


def evaluation_path(run_dir: str | os.PathLike, split: str, iw_samples: int, limit: int | None) -> Path:
    """``evaluation-<split>[-first<N>]-K<K>.json``: the name says which figures it holds."""
    part = f"-first{limit}" if limit is not None else ""
    return Path(run_dir) / f"evaluation-{split}{part}-K{iw_samples}.json"


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    iw_samples: int = 5000,
    *,
    limit: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    compile: bool | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` on a split of a run's own data pipeline; also saved in the run directory as
    :func:`evaluation_path` says, with each example's NLL and negative ELBO beside it (the per-example
    file of ``evaluation/comparison.py``). ``limit`` takes the first N examples of the split in their stored order.
    Started by torchrun, the processes share the batches out and rank 0 writes the file.
    """
    with session(device) as processes:
        return _evaluate_run(run_dir, split, iw_samples, limit, seed, processes, progress, compile)


def _evaluate_run(run_dir: str | os.PathLike, split: str, iw_samples: int, limit: int | None, seed: int,
                  processes: Processes, progress: bool, compile: bool | None) -> dict[str, Any]:
    run = rundir.load(run_dir, device=processes.device)
    dataset = load_data(run.config)
    part = getattr(dataset, split)
    if limit is not None:
        part = Split(*(None if t is None else t[:limit] for t in (part.x, part.y, part.c)))
    if part.x.shape[0] == 0:
        raise VaelabError(f"{run_dir}: the {split} split is empty")
    json_path = evaluation_path(run_dir, split, iw_samples, limit)
    partial = PartialEvaluation(json_path)
    try:
        result = evaluate(run.model, part, iw_samples, seed=seed, progress=progress, processes=processes,
                          per_example=True, partial=partial, compile=compile)
    except KeyboardInterrupt:
        if processes.is_main:
            log.warning("interrupted; the finished batches are kept: the same command resumes the evaluation")
        raise
    per_example = result.pop("per_example")
    per_example_file = per_example_path(json_path)
    result = {
        **result,
        "split": split,
        "dataset": run.config.data.dataset,
        "binarize": run.config.data.binarize,
        "seed": seed,
        "epochs_trained": run.metrics[-1]["epoch"] if run.metrics else None,
        "per_example_file": per_example_file.name,
    }
    if processes.is_main:
        about = {key: str(result[key]) for key in ("dataset", "binarize", "split", "iw_samples", "seed", "n")}
        save_per_example(per_example_file, per_example, example_fingerprints(part.x), about)
        atomic_write_json(json_path, result)
        partial.remove_all()
    return result
