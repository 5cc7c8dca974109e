"""The command line end to end on the embedded digits, and its handling of bad input: one line on
stderr naming the file or flag, exit status 2, no traceback, nothing overwritten."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab import rundir
from vaelab.cli import main
from vaelab.data.idx import write_idx
from vaelab.views.images import image_grid
from tests.conftest import directory_snapshot

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--no-progress"]


def _fails_with(capsys, argv: list[str], *fragments: str) -> str:
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_train_sample_reconstruct_datasets(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--out", str(run), *TINY]) == 0
    assert (run / rundir.MODEL).is_file() and (run / rundir.SAMPLES).is_file()
    assert main(["sample", str(run), "-n", "10", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == image_grid(torch.zeros(10, 1, 8, 8)).size  # a grid of 10 digits
    assert main(["reconstruct", str(run), "-n", "8", "--out", str(tmp_path / "r.png")]) == 0
    assert Image.open(tmp_path / "r.png").size[1] > Image.open(tmp_path / "r.png").size[0] / 8
    capsys.readouterr()
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "digits" in listing and "fashion-mnist" in listing and "mnist" in listing
    # Resume to more epochs from the CLI.
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert len((run / rundir.METRICS).read_text().splitlines()) == 3


def test_config_file_with_flag_override(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"model": {"hidden": [16], "latent_dim": 3}, "train": {"epochs": 1, "batch_size": 64}}')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--latent-dim", "2", "--out", str(out), "--no-progress"]) == 0
    saved = rundir.read_config(out / rundir.CONFIG)
    assert saved.model.latent_dim == 2 and saved.model.hidden == (16,) and saved.train.epochs == 1


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "--dataset", "no-such-data"], ["no-such-data"]),
        (["train", "--latent-dim", "0"], ["--latent-dim", ">= 1"]),
        (["train", "--epochs", "many"], ["--epochs", "many"]),
        (["train", "--lr", "-1"], ["--lr"]),
        (["train", "--arch", "transformer"], ["--arch"]),
        (["train", "--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["train", "--device", "tpu"], ["--device"]),
        (["sample", "/no/such/run", "--out", "x.png"], ["/no/such/run", "no such run directory"]),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_bad_flags_and_names(capsys, argv, fragments):
    _fails_with(capsys, argv, *fragments)


def test_foreign_and_corrupt_run_directories(tmp_path, capsys, trained_run):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    _fails_with(capsys, ["sample", str(foreign), "--out", str(tmp_path / "x.png")], "not a vaelab run directory")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained_run.path, corrupt)
    (corrupt / rundir.MODEL).write_bytes(b"\x00" * 100)
    _fails_with(capsys, ["sample", str(corrupt), "--out", str(tmp_path / "x.png")], "model.safetensors")
    assert not (tmp_path / "x.png").exists()


def test_corrupt_and_truncated_idx_files(tmp_path, capsys):
    root = tmp_path / "data" / "mnist"
    root.mkdir(parents=True)
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.zeros(20, np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", images)
    write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    write_idx(root / "t10k-images-idx3-ubyte.gz", images[:5])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[:5])
    truncated = gzip.compress(gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())[:-100])
    (root / "train-images-idx3-ubyte.gz").write_bytes(truncated)
    _fails_with(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r")],
                "train-images-idx3-ubyte.gz")
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    _fails_with(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r")],
                "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "r").exists()


def test_image_folder_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_with(capsys, ["train", "--dataset", str(empty)], str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (8, 8)).save(mixed / "a.png")
    Image.new("L", (8, 9)).save(mixed / "b.png")
    Image.new("L", (8, 8)).save(mixed / "c.png")
    _fails_with(capsys, ["train", "--dataset", str(mixed)], "b.png")


def test_existing_run_is_not_overwritten(capsys, trained_run):
    before = directory_snapshot(trained_run.path)
    _fails_with(capsys, ["train", "--out", str(trained_run.path), *TINY], "already exists")
    assert directory_snapshot(trained_run.path) == before


def test_entry_points_run_as_programs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vaelab", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--latent-dim" in result.stdout
    result = subprocess.run([sys.executable, "-m", "vaelab", "sample", str(tmp_path / "none"), "--out", "x.png"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vaelab: error: {tmp_path / 'none'}: no such run directory"
    script = shutil.which("vaelab", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script is not None, "the console script 'vaelab' is not installed next to the interpreter"
    assert subprocess.run([script, "--help"], capture_output=True).returncode == 0


def test_sample_replaces_an_existing_picture_only_with_force(trained_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    out.write_bytes(b"mine")
    assert main(["sample", str(trained_run.path), "-n", "4", "--out", str(out)]) == 2
    assert out.read_bytes() == b"mine" and "--force" in capsys.readouterr().err
    assert main(["sample", str(trained_run.path), "-n", "4", "--out", str(out), "--force"]) == 0
    Image.open(out).load()


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from vaelab.cli import _progress, build_parser

    args = build_parser().parse_args(["train"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not _progress(args)  # logs and CI: per-epoch lines only
    assert _progress(build_parser().parse_args(["train", "--progress"]))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _progress(args) and not _progress(build_parser().parse_args(["train", "--no-progress"]))


def test_examples_binarise_for_the_bernoulli_likelihood_and_use_data_one_can_make():
    from pathlib import Path

    from vaelab.cli import build_parser

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    beta = [line for line in readme.splitlines() if "--objective beta" in line and "vaelab train" in line]
    assert beta and all("--binarize dynamic" in line for line in beta)
    assert "faces.npz" not in readme and "write_shapes_npz('shapes.npz'" in readme
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert "--binarize dynamic" in train.epilog
