"""The ``vaelab`` command line: a thin layer mapping flags onto the config and the public API.

Flags carry the names of the config settings they set (``--latent-dim`` sets ``latent_dim``), so a
setting's error message can name its flag. User errors (:class:`~vaelab.errors.VaelabError`, bad
flags) become one line on stderr and exit status 2; Ctrl-C exits with 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vaelab.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, read_config
from vaelab.errors import VaelabError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting, so the message stays one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a VAE and write a run directory",
        description="Train a VAE by maximising the ELBO. Writes config.json, model.safetensors, "
        "training_state.safetensors, metrics.jsonl, summary.json and pictures into --out.",
        epilog="Example (the classic 784-400-20 model): vaelab train --dataset fashion-mnist --arch mlp "
        "--hidden 400 --latent-dim 20 --likelihood bernoulli --epochs 10",
    )
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help=f"digits, mnist, fashion-mnist, or a path to an image folder / .npz file (default: {d.dataset})")
    data.add_argument("--data-dir", help="folder holding <name>/ sub-folders, searched first for named datasets")
    data.add_argument("--binarize", choices=("none", "static", "dynamic"), help=f"binarise pixels (default: {d.binarize})")
    data.add_argument("--val-size", type=int, help="validation examples carved from the training data")
    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=("mlp", "conv"), help=f"network type (default: {m.arch})")
    model.add_argument("--hidden", type=int, nargs="+", metavar="WIDTH", help=f"hidden layer widths (default: {' '.join(map(str, m.hidden))})")
    model.add_argument("--channels", type=int, nargs="+", metavar="C", help=f"conv channels per stride-2 layer (default: {' '.join(map(str, m.channels))})")
    model.add_argument("--latent-dim", type=int, help=f"dimensions of z (default: {m.latent_dim})")
    model.add_argument("--likelihood", choices=("bernoulli", "gaussian", "cbernoulli"), help=f"p(x|z) (default: {m.likelihood})")
    model.add_argument("--gaussian-scale", type=float, help="fixed sigma of the gaussian likelihood (default: learned)")
    opt = p.add_argument_group("training")
    opt.add_argument("--epochs", type=int, help=f"passes over the training set (default: {t.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"examples per step (default: {t.batch_size})")
    opt.add_argument("--lr", type=float, help=f"Adam learning rate (default: {t.lr})")
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after this many epochs without validation improvement")
    opt.add_argument("--seed", type=int, help=f"random seed (default: {t.seed})")
    opt.add_argument("--device", help=f"auto, cpu, cuda, cuda:N or mps (default: {t.device})")
    run = p.add_argument_group("run")
    run.add_argument("--config", type=Path, help="JSON file with data/model/train sections (flags override it)")
    run.add_argument("--out", type=Path, help="new run directory (default: runs/<dataset>-<arch>-<time>)")
    run.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run (only --epochs and --device may change)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)


SETTINGS = (
    "dataset", "data_dir", "binarize", "val_size", "arch", "hidden", "channels", "latent_dim",
    "likelihood", "gaussian_scale", "epochs", "batch_size", "lr", "grad_clip", "early_stopping",
    "seed", "device",
)


def _train(args: argparse.Namespace) -> None:
    from vaelab.training import train

    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise VaelabError("--resume continues a run in place; it cannot be combined with --config or --out")
        train(resume=args.resume, progress=not args.no_progress, **settings)
        return
    config = read_config(args.config) if args.config is not None else RunConfig()
    train(config, out=args.out, progress=not args.no_progress, **settings)


def _add_sample_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sample", help="draw samples from a trained model", description="Decode z ~ p(z) and save a grid of the means of p(x|z).")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    p.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace) -> None:
    import torch

    from vaelab.rundir import load
    from vaelab.training import resolve_device
    from vaelab.views import image_grid, save_image

    if args.n < 1:
        raise VaelabError(f"-n: must be >= 1, got {args.n}")
    device = resolve_device(args.device)
    run = load(args.run, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = run.model.sample(args.n, generator=generator)
    if samples.dim() != 4:
        raise VaelabError(f"{args.run}: the model is not an image model (data shape {list(samples.shape[1:])})")
    save_image(image_grid(samples.clamp(0, 1).cpu()), args.out)
    print(args.out)


def _add_reconstruct_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("reconstruct", help="reconstruct data through a trained model", description="Save inputs (rows) above their reconstructions, the mean of p(x|z) at z = E[q(z|x)].")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("-n", type=int, default=32, help="number of images (default: 32)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="data split (default: test)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    p.set_defaults(handler=_reconstruct)


def _reconstruct(args: argparse.Namespace) -> None:
    from vaelab.rundir import load
    from vaelab.training import load_data, resolve_device
    from vaelab.views import reconstruction_grid, save_image

    if args.n < 1:
        raise VaelabError(f"-n: must be >= 1, got {args.n}")
    device = resolve_device(args.device)
    run = load(args.run, device=device)
    x = getattr(load_data(run.config), args.split).x[: args.n].to(device)
    if x.dim() != 4:
        raise VaelabError(f"{args.run}: the data are not images (shape {list(x.shape[1:])})")
    save_image(reconstruction_grid(x.cpu(), run.model.reconstruct(x).clamp(0, 1).cpu()), args.out)
    print(args.out)


def _add_datasets_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("datasets", help="list named datasets and where they were found", description="List the named datasets, whether they are on this machine and where.")
    p.add_argument("--data-dir", help="folder holding <name>/ sub-folders, searched first")
    p.set_defaults(handler=_datasets)


def _datasets(args: argparse.Namespace) -> None:
    from vaelab.datasets import describe_datasets

    for info in describe_datasets(args.data_dir):
        print(_format_dataset(info))


def _format_dataset(info: dict) -> str:
    status = "found" if info.get("found") else "missing"
    return f"{info['name']:<14} {status:<8} {info.get('location', '')}"


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
    _add_datasets_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help()
            return EXIT_USER_ERROR
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
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
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
