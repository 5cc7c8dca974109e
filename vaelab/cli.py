"""The ``vaelab`` command line: a thin layer mapping flags onto the config and the public API.

Flags carry the names of the config settings they set (``--latent-dim`` sets ``latent_dim``), so a
setting's error message can name its flag. User errors (:class:`~vaelab.errors.VaelabError`, bad
flags) become one line on stderr and exit status 2; Ctrl-C exits with 130 after saying how to resume,
and SIGTERM (``kill``, a batch scheduler's time limit, torchrun stopping its workers) is taken the same
way, exit status 143, instead of ending the process wherever it stands.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from vaelab.config import (
    DEFAULT_EPOCHS,
    MIN_DEFAULT_STEPS,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    read_config,
    registry_names,
)
from vaelab.errors import VaelabError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
MAX_SAMPLES = 10_000  # images in one sample grid


# A run's own records: commands that write pictures never replace these, even with --force.
RUN_RECORDS = ("config.json", "model.safetensors", "training_state.safetensors", "metrics.jsonl",
               "summary.json", "data.json", "report.html")


class _UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting, so the message stays one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _seed(text: str) -> int:
    """``--seed``: an integer in 0..2**63 - 1 (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED}, got {text}")
    return value


def _add_progress_flags(p: argparse.ArgumentParser) -> None:
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--no-progress", action="store_true", help="no progress bar")
    bar.add_argument("--progress", action="store_true",
                     help="a progress bar even when stderr is not a terminal (default: only on a terminal)")


def _progress(args: argparse.Namespace) -> bool:
    """Draw tqdm bars only on a terminal: in logs and CI they tangle with the per-epoch lines."""
    if args.no_progress:
        return False
    return args.progress or sys.stderr.isatty()


def _add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")


def _add_device_and_report_flags(p: argparse.ArgumentParser) -> None:
    _add_device_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    _add_progress_flags(p)


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a VAE and write a run directory",
        description="Train a VAE by maximising the ELBO. Writes config.json, model.safetensors, "
        "training_state.safetensors, metrics.jsonl, summary.json and pictures into --out.",
        epilog="Example (the classic 784-400-20 model): vaelab train --dataset fashion-mnist --arch mlp "
        "--hidden 400 --latent-dim 20 --likelihood bernoulli --binarize dynamic --epochs 10",
    )
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help=f"digits, mnist, fashion-mnist, or a path to an image folder / .npz file (default: {d.dataset})")
    data.add_argument("--data-dir", help="folder holding <name>/ sub-folders, searched first for named datasets")
    data.add_argument("--binarize", choices=("none", "static", "dynamic"), help=f"binarise pixels (default: {d.binarize})")
    data.add_argument("--val-size", type=int, help="validation examples carved from the training data")
    data.add_argument("--labelled", type=int, metavar="N", help="keep the labels of only N training examples, class-balanced (M2)")
    data.add_argument("--missing-frac", type=float, metavar="P", help="hide this fraction of the training labels or covariates")
    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=registry_names("arch"), help=f"network type: mlp, gated (Tomczak's gated MLP) or conv (default: {m.arch})")
    model.add_argument("--hidden", type=int, nargs="+", metavar="WIDTH", help=f"hidden layer widths (default: {' '.join(map(str, m.hidden))})")
    model.add_argument("--channels", type=int, nargs="+", metavar="C", help=f"conv channels per stride-2 layer (default: {' '.join(map(str, m.channels))})")
    model.add_argument("--latent-dim", type=int, help=f"dimensions of z (default: {m.latent_dim})")
    model.add_argument("--likelihood", choices=("auto", *registry_names("likelihood")),
                       help="p(x|z); auto chooses from the data: bernoulli for binary data, dlogistic-mix for 8-bit images (default: auto)")
    model.add_argument("--mixture-components", type=int, metavar="M", help=f"dlogistic-mix: logistics per pixel (default: {m.mixture_components})")
    model.add_argument("--context-hidden", type=int, metavar="H",
                       help=f"bernoulli-ar: ELU units per pixel in the causal context, 0 = linear (default: {m.context_hidden})")
    model.add_argument("--gaussian-scale", type=float, help="fixed sigma of the gaussian likelihood (default: learned)")
    model.add_argument("--prior", metavar="SPEC", help=f"p(z): standard, mog:K (learned mixture) or vamp:K (VampPrior, K pseudo-inputs) (default: {m.prior})")
    model.add_argument("--stochastic-layers", type=int, metavar="L", help=f"latent layers, each of --latent-dim; L > 1 is a top-down hierarchical VAE (default: {m.stochastic_layers})")
    model.add_argument("--hierarchy", choices=registry_names("hierarchy"),
                       help="how stochastic layers connect: ladder (shared top-down features, the decoder reads z_1) or hvae "
                            f"(Tomczak & Welling's HVAE: separate networks, the decoder reads every layer) (default: {m.hierarchy})")
    model.add_argument("--condition", choices=registry_names("condition"),
                       help=f"condition encoder and decoder on the class label or on continuous covariates (default: {m.condition})")
    model.add_argument("--classifier", choices=("shared", "separate"),
                       help=f"M2's q(y|x): a softmax on the encoder's hidden layers, or a network of its own (default: {m.classifier})")
    opt = p.add_argument_group("training")
    opt.add_argument("--epochs", type=int, help=f"passes over the training set (default: {DEFAULT_EPOCHS}, or enough for "
                                                f"{MIN_DEFAULT_STEPS:,} steps on a small dataset)")
    opt.add_argument("--batch-size", type=int, help=f"examples per step (default: {t.batch_size})")
    opt.add_argument("--lr", type=float, help=f"Adam learning rate (default: {t.lr})")
    opt.add_argument("--lr-schedule", choices=("constant", "cosine"), help=f"learning rate over training (default: {t.lr_schedule})")
    opt.add_argument("--lr-min", type=float, help="cosine: the final learning rate (default: 0)")
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after this many epochs without validation improvement")
    opt.add_argument("--seed", type=_seed, help=f"random seed (default: {t.seed})")
    opt.add_argument("--objective", choices=registry_names("objective"), help=f"what to maximise (default: {t.objective})")
    opt.add_argument("--beta", type=float, help=f"KL weight of --objective beta (default: {t.beta})")
    opt.add_argument("--warmup-epochs", type=float, metavar="E", help="raise the KL weight linearly from 0 over E epochs")
    opt.add_argument("--free-bits", type=float, metavar="NATS", help="do not penalise a latent dimension's batch-mean KL below NATS")
    opt.add_argument("--iwae-samples", type=int, metavar="K", help=f"importance samples of --objective iwae (default: {t.iwae_samples})")
    opt.add_argument("--alpha", type=float, help="M2 classification weight (default: 0.1, Kingma et al.'s alpha = 0.1 N)")
    opt.add_argument("--precision", choices=("fp32", "bf16"), help="bf16: autocast the networks (GPUs, CPUs with AVX512-BF16) (default: fp32)")
    opt.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks (compiles up front)")
    opt.add_argument("--device", help=f"auto, cpu, cuda, cuda:N or mps (default: {t.device})")
    opt.add_argument("--init-from", metavar="RUN", help="start from the weights of RUN, a run of the same model (fine-tuning, "
                     "or a warm restart with a new schedule; --config RUN/config.json gives its model)")
    run = p.add_argument_group("run")
    run.add_argument("--config", type=Path, help="JSON file with data/model/train sections (flags override it)")
    run.add_argument("--out", type=Path, help="new run directory (default: runs/<dataset>-<arch>-<time>)")
    run.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run (only --epochs and --device may change)")
    _add_progress_flags(run)
    run.add_argument("--no-plots", action="store_true", help="skip RUN/plots/ and RUN/report.html after training")
    run.add_argument("--tensorboard", action="store_true", help="log scalars and pictures to RUN/tensorboard/ (needs tensorboard)")
    p.set_defaults(handler=_train)


SETTINGS = (
    "dataset", "data_dir", "binarize", "val_size", "arch", "hidden", "channels", "latent_dim",
    "likelihood", "gaussian_scale", "epochs", "batch_size", "lr", "grad_clip", "early_stopping",
    "seed", "device", "labelled", "missing_frac", "condition", "objective", "beta", "warmup_epochs",
    "free_bits", "iwae_samples", "alpha", "precision", "compile", "classifier", "prior", "stochastic_layers",
    "hierarchy", "init_from",
    "lr_schedule", "lr_min", "mixture_components", "context_hidden",
)


def _train(args: argparse.Namespace) -> None:
    from vaelab.training.distributed import is_main_process
    from vaelab.training.run import train

    if not is_main_process():  # under torchrun, rank 0 alone reports the run
        logging.getLogger().setLevel(logging.ERROR)
    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise VaelabError("--resume continues a run in place; it cannot be combined with --config or --out")
        run = train(resume=args.resume, progress=_progress(args), callbacks=_callbacks(args), **settings)
    else:
        config = read_config(args.config) if args.config is not None else RunConfig()
        run = train(config, out=args.out, progress=_progress(args), callbacks=_callbacks(args), **settings)
    if is_main_process():
        from vaelab.views.run_views import write_run_views

        write_run_views(run, plots=not args.no_plots)


def _callbacks(args: argparse.Namespace) -> list:
    """What watches training from the CLI: TensorBoard logging when asked for (rank 0 only)."""
    from vaelab.training.distributed import is_main_process

    if not args.tensorboard or not is_main_process():
        return []
    from vaelab.views.tensorboard_log import TensorBoardCallback

    return [TensorBoardCallback()]


def _add_sample_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sample", help="draw samples from a trained model", description="Decode z ~ p(z) and save a grid of the means of p(x|z).")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write (a new file unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never a run's config, weights or records)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    _add_device_flag(p)
    p.add_argument("--prior", default="model", metavar="model|gmm:K",
                   help="draw z from the model's trained p(z) (model, the default) or from a K-component Gaussian mixture "
                   "fitted to the encoded training set, cached in RUN (gmm:10; Ghosh et al. 2020)")
    p.add_argument("--label", help="label-conditional models: generate this class (an index or a class name, e.g. Trouser)")
    p.add_argument("--grid", action="store_true", help="label-conditional models: one column per class")
    p.add_argument("--covariate", action="append", default=[], metavar="NAME=VALUE",
                   help="covariate models: set a covariate (repeatable; others at their training mean)")
    p.set_defaults(handler=_sample)


def check_image_out(out: Path, run_dir: Path, force: bool) -> None:
    """Refuse an ``--out`` that would replace what the command did not create: a directory, a run's
    own records (its config, weights, metrics: never, whatever the flags), or any existing file
    unless ``force``. Checked before any work, so a refused command changes nothing on disk."""
    if out.is_dir():
        raise VaelabError(f"--out {out}: is a directory, expected the path of a PNG file to write")
    inside_run = run_dir.is_dir() and out.resolve().parent == run_dir.resolve()
    if inside_run and (out.name in RUN_RECORDS or out.suffix.lower() != ".png" or out.name.endswith(".tmp")):
        raise VaelabError(f"--out {out}: would overwrite a file of the run {run_dir}; write the picture elsewhere")
    if (out.exists() or out.is_symlink()) and not force:
        raise VaelabError(f"--out {out}: exists; give --force to replace it, or choose a new file")


def _sample(args: argparse.Namespace) -> None:
    import torch

    from vaelab.models.conditions import parse_covariate_values
    from vaelab.evaluation.latent_gmm import decode_latents, parse_prior, sample_latents
    from vaelab.data.pipeline import resolve_device
    from vaelab.rundir import load
    from vaelab.views.images import image_grid, save_image

    if not 1 <= args.n <= MAX_SAMPLES:
        raise VaelabError(f"-n: must be in 1..{MAX_SAMPLES}, got {args.n}")
    check_image_out(args.out, args.run, args.force)
    parse_prior(args.prior)
    device = resolve_device(args.device)
    run = load(args.run, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    covariates = parse_covariate_values(args.covariate, run.config.model.covariate_names or ())
    c, nrow = run.model.condition.sample_conditions(run.model, args.n, label=args.label, grid=args.grid,
                                                    covariates=covariates, generator=generator)
    n = args.n if c is None else c.shape[0]
    samples = decode_latents(run, sample_latents(run, args.prior, n, generator), c)
    if samples.dim() != 4:
        raise VaelabError(f"{args.run}: the model is not an image model (data shape {list(samples.shape[1:])})")
    save_image(image_grid(samples.clamp(0, 1).cpu(), nrow=nrow), args.out)
    print(args.out)


def _add_reconstruct_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("reconstruct", help="reconstruct data through a trained model", description="Save inputs (rows) above their reconstructions, the mean of p(x|z) at z = E[q(z|x)].")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("-n", type=int, default=32, help="number of images (default: 32)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="data split (default: test)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write (a new file unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never a run's config, weights or records)")
    _add_device_flag(p)
    p.set_defaults(handler=_reconstruct)


def _reconstruct(args: argparse.Namespace) -> None:
    from vaelab.data.pipeline import load_data, resolve_device
    from vaelab.rundir import load
    from vaelab.views.images import reconstruction_grid, save_image

    if args.n < 1:
        raise VaelabError(f"-n: must be >= 1, got {args.n}")
    check_image_out(args.out, args.run, args.force)
    device = resolve_device(args.device)
    run = load(args.run, device=device)
    split = getattr(load_data(run.config), args.split)
    x = split.x[: args.n].to(device)
    if x.dim() != 4:
        raise VaelabError(f"{args.run}: the data are not images (shape {list(x.shape[1:])})")
    c = run.model.condition.of(split)
    c = None if c is None else c[: args.n].to(device)
    if c is not None and bool(run.model.condition.missing(c).any()):
        raise VaelabError(f"--split {args.split}: some covariates are hidden there; reconstruct the val or test split")
    save_image(reconstruction_grid(x.cpu(), run.model.reconstruct(x, c).clamp(0, 1).cpu()), args.out)
    print(args.out)


def _add_em_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "em",
        help="fit a Gaussian mixture or factor analysis by EM (a classical baseline)",
        description="Fit a GMM or factor analysis to the training split by EM with exact E-steps "
        "(Bishop, PRML ch. 9). Writes config.json, params.safetensors, history.jsonl (log-likelihood and "
        "ELBO per iteration), history.png and, for images, components.png into --out.",
        epilog="Example: vaelab em --dataset mnist --model gmm --components 10 --limit 10000 --out runs/em-gmm10",
    )
    p.add_argument("--dataset", required=True, help="digits, mnist, fashion-mnist, or a path to an image folder / .npz file")
    p.add_argument("--data-dir", help="folder holding <name>/ sub-folders, searched first for named datasets")
    p.add_argument("--model", required=True, choices=("gmm", "fa"), help="gmm: Gaussian mixture; fa: factor analysis")
    p.add_argument("--components", type=int, required=True, metavar="K", help="mixture components (gmm) or latent factors (fa)")
    p.add_argument("--covariance", choices=("full", "diag"), default="diag",
                   help="gmm covariances (default: diag; full costs O(K D^3) per iteration, i.e. minutes on "
                   "784-pixel images, and is singular on always-black pixels without its small ridge)")
    p.add_argument("--max-iter", type=int, default=100, help="at most this many EM iterations (default: 100)")
    p.add_argument("--tol", type=float, default=1e-3, help="stop when the mean log-likelihood changes by less, in nats (default: 0.001)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds --limit's subsample and the initialisation (default: 0)")
    p.add_argument("--limit", type=int, metavar="N", help="fit on N random training examples, for speed (default: all)")
    p.add_argument("--out", type=Path, required=True, help="new output directory")
    p.set_defaults(handler=_em)


def _em(args: argparse.Namespace) -> None:
    from vaelab.em.run import final_log_likelihood, run_em

    result = run_em(
        args.dataset, args.model, args.components, args.out, data_dir=args.data_dir,
        covariance=args.covariance, max_iter=args.max_iter, tol=args.tol, seed=args.seed, limit=args.limit,
    )
    per_example, per_dim = final_log_likelihood(result)
    status = "converged" if result.converged else "stopped at --max-iter"
    print(f"log-likelihood {per_example:.3f} nats/example, {per_dim:.4f} nats/dimension "
          f"({status} after {result.history[-1]['iteration']} iterations)")
    print(args.out)


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="negative ELBO, importance-weighted NLL, bits/dim, KL, active units",
        description="Estimate log p(x) on a data split: the ELBO and the importance-weighted bound with K "
        "samples (Burda et al. 2016), both as losses in nats per example (lower is better). Results are "
        "also written to RUN/evaluation-<split>[-first<N>]-K<K>.json, and each example's figures beside it "
        "(.per-example.safetensors, for vaelab compare).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="data split (default: test)")
    p.add_argument("--iw-samples", type=int, default=5000, metavar="K", help="importance samples per example (default: 5000)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N examples of the split, in stored order")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the importance samples (default: 0)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each chunk of samples: 1.1-1.8x faster, same figures up to rounding, "
                   "10-50 s to compile (default: when a process decodes >= 2^24 samples, e.g. all 10,000 test images at K = 5000)")
    _add_device_and_report_flags(p)
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from vaelab.evaluation.evidence import evaluate_run

    if args.iw_samples < 1:
        raise VaelabError(f"--iw-samples: must be >= 1, got {args.iw_samples}")
    if args.limit is not None and args.limit < 1:
        raise VaelabError(f"--limit: must be >= 1, got {args.limit}")
    result = evaluate_run(args.run, split=args.split, iw_samples=args.iw_samples, limit=args.limit,
                          seed=args.seed, device=args.device, progress=_progress(args) and not args.json,
                          compile=args.compile)
    from vaelab.training.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone reports
        return
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['dataset']} {result['split']} split, {result['n']} examples, K = {result['iw_samples']}:")
    bits = "bits/dim" if result["discrete_likelihood"] else "bits/dim of a density, not a code length"
    print(f"  NLL (IW bound)   {result['nll']:.2f} ± {result['nll_standard_error']:.2f} nats  ({result['bits_per_dim']:.4f} {bits})")
    print(f"  negative ELBO    {result['negative_elbo']:.2f} nats  = reconstruction {result['rec']:.2f} + KL {result['kl']:.2f}")
    if len(result["kl_per_layer"]) > 1:
        print(f"  KL per layer     {', '.join(f'{kl:.2f}' for kl in result['kl_per_layer'])} (bottom first)")
    print(f"  active units     {result['active_units']} of {result['latent_dim']}")


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "compare",
        help="two models on the same images: the paired NLL difference and its standard error",
        description="Pair two runs' saved evaluations image by image (vaelab evaluate keeps every image's "
        "NLL): B minus A in nats over the examples both scored, with the paired standard error, far smaller "
        "than either NLL's own because the spread between images is common to both models.",
    )
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory A")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory B")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="data split (default: test)")
    p.add_argument("--iw-samples", type=int, default=5000, metavar="K", help="the evaluations' K (default: 5000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> None:
    import json

    from vaelab.evaluation.comparison import compare_runs

    result = compare_runs(args.run_a, args.run_b, split=args.split, iw_samples=args.iw_samples)
    if args.json:
        print(json.dumps(result))
        return
    print(f"A = {args.run_a}, B = {args.run_b}: {args.split} split, the first {result['n']} examples "
          f"both scored, K = {args.iw_samples}")
    for key, label in (("nll", "NLL (IW bound)"), ("negative_elbo", "negative ELBO")):
        r = result[key]
        print(f"  {label:<16} A {r['a']:.2f}  B {r['b']:.2f}  B - A = {r['difference']:+.2f} ± "
              f"{r['paired_standard_error']:.2f} nats (paired; unpaired ± {r['unpaired_standard_error']:.2f}), "
              f"B lower on {100 * r['b_lower_fraction']:.0f}% of examples")


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="copy a trained model to share: no optimizer state, optionally float16 weights",
        description="Write a new run directory OUT with the model of RUN (config, weights, metrics, summary, "
        "data provenance, evaluations) and none of its training state, as the model zoo's entries are. "
        "--half stores the weights as float16 (half the bytes; loading widens them exactly); the evaluations "
        "are then left out, since they describe the float32 weights: run vaelab evaluate OUT.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory to export")
    p.add_argument("out", type=Path, metavar="OUT", help="new directory to write (must not exist)")
    p.add_argument("--half", action="store_true", help="store the weights as float16")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> None:
    from vaelab.rundir import export_run

    written = export_run(args.run, args.out, half=args.half)
    print(f"{args.out}: {', '.join(written)}")


def _add_quality_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "quality",
        help="classifier Fréchet distance of samples to the test set (offline, not FID)",
        description="Fréchet distance (Heusel et al. 2017) between n generated images (means of p(x|z)) "
        "and the test split, in the features of a small classifier trained once per dataset and cached "
        "(not Inception, so not FID). Lower is better; real training images give the floor. Results are "
        "also written to RUN/quality-<prior>.json.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("-n", type=int, default=10000, help="number of generated images (default: 10000)")
    p.add_argument("--prior", default="model", help="where z comes from: model (its trained p(z)) or gmm:K fitted to its codes (default: model)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the latents and the reference images (default: 0)")
    _add_device_and_report_flags(p)
    p.set_defaults(handler=_quality)


def _quality(args: argparse.Namespace) -> None:
    import json

    from vaelab.data.pipeline import resolve_device
    from vaelab.evaluation.quality import quality, save_quality
    from vaelab.rundir import load

    if args.n < 2:
        raise VaelabError(f"-n: must be at least 2 (a covariance needs two samples), got {args.n}")
    run = load(args.run, device=resolve_device(args.device))
    result = quality(run, n=args.n, prior=args.prior, seed=args.seed, progress=_progress(args) and not args.json)
    path = save_quality(args.run, result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['dataset']}: {result['n']} samples (prior {result['prior']}) against {result['n_test']} test images:")
    print(f"  classifier Fréchet distance  {result['classifier_frechet_distance']:.2f}  (lower is better)")
    print(f"  real training images         {result['train_test_frechet_distance']:.2f}  ({result['n_reference']} images: the floor)")
    print(f"  feature classifier           {100 * result['classifier_test_accuracy']:.1f}% test accuracy")
    print(f"written to {path}")


def _add_datasets_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("datasets", help="list named datasets and where they were found", description="List the named datasets, whether they are on this machine and where.")
    p.add_argument("--data-dir", help="folder holding <name>/ sub-folders, searched first")
    p.set_defaults(handler=_datasets)


def _datasets(args: argparse.Namespace) -> None:
    from vaelab.data.datasets import describe_datasets

    print(f"{'name':<14} {'status':<8} {'what':<42} {'train/val/test':<18} where")
    for info in describe_datasets(args.data_dir):
        sizes = "/".join(str(info["sizes"][split]) for split in ("train", "val", "test"))
        status = "found" if info["found"] else "missing"
        print(f"{info['name']:<14} {status:<8} {info['kind']:<42} {sizes:<18} {info['location']}")
    print("any other --dataset is a path: a folder of images (class sub-folders = labels) or an .npz file")


def _add_plot_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "plot",
        help="plots of the latent space, the decoder and the KL per dimension",
        description="Write RUN/plots/<kind>.png. Kinds: curves (training curves), latent (test posterior "
        "means by label), manifold (decoder over a 2-D latent grid), interpolation (linear and slerp), "
        "traversal (most active dimensions), kl (KL per dimension, active units); all = every kind the "
        "run can have (image kinds need image data, manifold a 2-D latent).",
        epilog="Example: vaelab plot runs/fmnist --kind latent --method tsne",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help="all, curves, latent, manifold, interpolation, traversal or kl; repeatable (default: all)")
    p.add_argument("--method", default="pca", help="latent projection for latent_dim > 2: pca, tsne or umap (default: pca)")
    p.add_argument("--limit", type=int, default=5000, metavar="N", help="test examples in the latent scatter (default: 5000)")
    p.add_argument("--label", type=int, default=0, help="class drawn by manifold and traversal of a label-conditional model (default: 0)")
    _add_device_flag(p)
    p.set_defaults(handler=_plot)


def _plot(args: argparse.Namespace) -> None:
    from vaelab.views.plots import write_run_plots

    for path in write_run_plots(args.run, args.kind or ["all"], device=args.device, limit=args.limit,
                                method=args.method, label=args.label):
        print(path)


def _add_report_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="write RUN/report.html: config, metrics, evaluations and every picture, in one file",
        description="Write a self-contained HTML report (images embedded, no scripts or external links) "
        "of a run directory. Plots missing from RUN/plots/ are drawn first unless --no-plots.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--open", action="store_true", help="open the report in a web browser")
    p.add_argument("--no-plots", action="store_true", help="do not draw missing plots, report what is there")
    _add_device_flag(p)
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> None:
    import webbrowser

    from vaelab.views.plots import write_run_plots
    from vaelab.views.report import write_report

    if not args.no_plots:
        write_run_plots(args.run, device=args.device, missing_only=True)
    path = write_report(args.run)
    print(path)
    if args.open:
        webbrowser.open(path.resolve().as_uri())


def _add_explore_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "explore",
        help="explore the latent space in a local web page",
        description="Serve a web page with a slider per latent dimension (most active first), the latent "
        "map of the test set (click to decode), a label selector for label-conditional models, and "
        "'encode this image'. Needs an image model. Ctrl-C stops the server.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port, 0 for any free one (default: 8000)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    _add_device_flag(p)
    p.set_defaults(handler=_explore)


def _explore(args: argparse.Namespace) -> None:
    from vaelab.views.explore import serve

    if not 0 <= args.port <= 65535:
        raise VaelabError(f"--port: must be in 0..65535, got {args.port}")
    serve(args.run, host=args.host, port=args.port, device=args.device, open_browser=not args.no_browser)


def _add_impute_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "impute",
        help="fill missing labels or covariates with the model, scored against the held-back truth",
        description="Impute with q(y|x) (labels) or q(c_missing|x, c_observed) (covariates) of a model trained "
        "with --labelled/--missing-frac. On train: the values hidden during training; on val/test: a fraction "
        "--hide-frac hidden now. Prints accuracy or RMSE beside a baseline that ignores x; saves "
        "RUN/imputation-<split>.json.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="data split (default: test)")
    p.add_argument("--hide-frac", type=float, default=1.0, help="val/test: fraction of covariates to hide and impute (default: 1)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds which val/test covariates are hidden (default: 0)")
    p.add_argument("--out", type=Path, help="also write an .npz with index, imputed, truth and was_missing")
    _add_device_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(handler=_impute)


def _impute(args: argparse.Namespace) -> None:
    import json

    from vaelab.evaluation.imputation import impute_run

    report = impute_run(args.run, args.split, hide_frac=args.hide_frac, seed=args.seed, device=args.device, out=args.out)
    if args.json:
        print(json.dumps(report))
    elif report["kind"] == "label":
        print(f"{report['split']}: {report['n_missing']} missing labels imputed by q(y|x): accuracy "
              f"{report['accuracy']:.4f} (baseline, {report['baseline']}: {report['baseline_accuracy']:.4f})")
    else:
        for name, figures in report["covariates"].items():
            print(f"{report['split']}: {name}: {figures['n_missing']} missing, RMSE {figures['rmse']:.4g} "
                  f"(baseline, training mean: {figures['baseline_rmse']:.4g}), R^2 {figures['r2']:.3f}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vaelab",
        description="Variational autoencoders: train, evaluate honestly, generate, look inside.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    _add_train_parser(commands)
    _add_sample_parser(commands)
    _add_reconstruct_parser(commands)
    _add_em_parser(commands)
    _add_evaluate_parser(commands)
    _add_compare_parser(commands)
    _add_export_parser(commands)
    _add_quality_parser(commands)
    _add_datasets_parser(commands)
    _add_explore_parser(commands)
    _add_plot_parser(commands)
    _add_report_parser(commands)
    _add_impute_parser(commands)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command stands so that it stops as Ctrl-C stops it: a training keeps its
    last checkpoint, an evaluation writes its finished batches (``evaluation/partial.py``)."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` while a command runs (signals reach only the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted, 143 terminated)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help()
            return EXIT_USER_ERROR
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
        with _sigterm_as_interrupt():
            args.handler(args)
    except _UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ConfigError as exc:
        print(f"vaelab: error: {_flag(exc.setting)}: {exc.problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    except VaelabError as exc:
        print(f"vaelab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # the file system refused (--out /proc/x, a full disk): its own words, one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vaelab: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except _Terminated:
        print("vaelab: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
