"""A generated corpus of bad input to configs, flags and run directories (issue 15).

Every case runs ``vaelab.cli.main`` in-process and asserts what a user must see: a non-zero exit, exactly
one line on stderr naming the file or flag at fault, no traceback, no hang (a ``signal.alarm`` guard
turns one into a failure instead of a stuck suite) and nothing on disk changed. The data-file corpus
(IDX, npz, image folders) is ``tests/test_data_corpus.py``; this one covers what vaelab reads besides
data: ``--config`` JSON (every field with every wrong type, absurd sizes, deep nesting), flags, and
the files of a run directory (every safetensors, training-state, metrics and config defect).

One tiny trained run (``trained_run``, shared by the session) is copied per run-directory case.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vaelab.cli import main
from vaelab.config import SECTIONS, _field_kinds

from .conftest import directory_snapshot

CASE_SECONDS = 60  # a case that has not finished by then hangs (most take well under a second)
GIANT = 64 << 20  # files of the sparse-file cases are compared by size and time, not read
DEEP = 100_000  # nesting depth of the deep-JSON cases: Python's json module recurses ~1000 deep


@dataclass
class Case:
    name: str
    argv: Callable[[Path, Path], list[str]]  # (case directory, run copy or None) -> argv
    names: str  # what the one stderr line must mention: the file or the flag
    prepare: Callable[[Path, Path], None] = field(default=lambda case_dir, run: None)
    needs_run: bool = False


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"no answer after {CASE_SECONDS} s")


def _tree(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (FIFOs and links included, never opened): a regular file's bytes
    (:func:`directory_snapshot`), or its size and time if it is a sparse giant of a case, else its kind."""
    small = {str(name): data for name, data in directory_snapshot(root).items()} if not _has_giant(root) else {}
    tree: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        status = p.lstat()
        if p.is_symlink():
            tree[str(p.relative_to(root))] = ("link", os.readlink(p))
        elif p.is_file():
            tree[str(p.relative_to(root))] = small.get(str(p.relative_to(root)), (status.st_size, status.st_mtime_ns))
        else:
            tree[str(p.relative_to(root))] = status.st_mode >> 12
    return tree


def _has_giant(root: Path) -> bool:
    return any(p.is_file() and not p.is_symlink() and p.stat().st_size > GIANT for p in root.rglob("*"))


def run_case(case: Case, tmp_path: Path, trained_run, capsys) -> None:
    run = None
    if case.needs_run:
        run = Path(shutil.copytree(trained_run.path, tmp_path / "run", symlinks=True))
    case.prepare(tmp_path, run)
    before = _tree(tmp_path)
    argv = case.argv(tmp_path, run)
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code != 0, f"exit 0 for {argv}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert case.names in lines[0], f"{case.names!r} not named in: {lines[0]}"
    assert _tree(tmp_path) == before, "the command changed files on disk"


# --- config JSON: every field with every wrong type ----------------------------------------------

_BAD_BY_KIND = {
    int: ["3", 2.5, True, [3], {"n": 3}, 10**30],
    float: ["0.001", True, [0.1], {"x": 1}, math.nan, math.inf],
    str: [5, True, ["digits"], {"name": "x"}],
    bool: ["yes", 1, [True]],
    tuple: ["44", [16.7], [True], 7, [[16]], {"a": 1}],
}


def _wrong_values(kinds: tuple[type, ...]) -> list:
    values = []
    for kind in (int, float, str, bool, tuple):
        if kind in kinds:
            values += [v for v in _BAD_BY_KIND[kind] if not _accepted(v, kinds)]
    if type(None) not in kinds:
        values.append(None)
    return values


def _accepted(value, kinds) -> bool:
    """Values of one kind's bad list that another kind of the same field legitimately takes."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (float in kinds and number and math.isfinite(value)) or (str in kinds and isinstance(value, str))


def _config_cases() -> list[Case]:
    cases = []
    for section, cls in SECTIONS.items():
        kinds = _field_kinds(cls)
        for f in fields(cls):
            for i, value in enumerate(_wrong_values(kinds[f.name])):
                text = json.dumps({section: {f.name: value}})  # NaN and Infinity as Python's json writes them
                cases.append(_config_case(f"config-{section}.{f.name}-{i}", text, f"{section}.{f.name}"))
    return cases


def _train_with_config(case_dir: Path, run: Path) -> list[str]:
    return ["train", "--config", str(case_dir / "c.json"), "--out", str(case_dir / "out"), "--no-plots"]


def _config_case(name: str, text: str | bytes | None, names: str, make: Callable[[Path], None] | None = None) -> Case:
    """``train --config c.json`` with ``text`` in c.json, or c.json made by ``make`` (a FIFO, a link...)."""
    def prepare(case_dir: Path, run: Path) -> None:
        path = case_dir / "c.json"
        if make is not None:
            make(path)
        elif text is not None:
            path.write_bytes(text.encode() if isinstance(text, str) else text)

    return Case(name, _train_with_config, names, prepare)


def _config_file_cases() -> list[Case]:
    sizes = {
        "hidden-20M": {"model": {"hidden": [20_000_000]}},
        "hidden-1e9": {"model": {"hidden": [1_000_000_000]}},
        "latent-4e9": {"model": {"latent_dim": 4_000_000_000}},
        "channels-1e8": {"model": {"arch": "conv", "channels": [100_000_000], "hidden": [100_000]}},
        "layers-1e6": {"model": {"stochastic_layers": 1_000_000}},
        "hidden-many": {"model": {"hidden": [40_000] * 1000}},
    }
    cases = [_config_case(f"config-size-{name}", json.dumps(raw), "c.json") for name, raw in sizes.items()]
    texts = {
        "deep-list": '{"model": {"hidden": ' + "[" * DEEP + "]" * DEEP + "}}",
        "deep-object": '{"model": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}",
        "deep-top": "[" * DEEP,
        "not-json": "{model: hidden}",
        "truncated": '{"model": {"hidden": [40',
        "list": "[1, 2]",
        "string": '"model"',
        "null": "null",
        "empty": "",
        "unknown-section": '{"network": {}}',
        "unknown-key": '{"model": {"hiden": [4]}}',
        "section-list": '{"model": [1]}',
        "format-99": '{"format": 99}',
        "format-string": '{"format": "2"}',
        "dataset-int": '{"data": {"dataset": 7}}',
        "dataset-list": '{"data": {"dataset": ["digits"]}}',
        "nan-literal": '{"train": {"lr": NaN}}',
        "infinity-literal": '{"train": {"beta": Infinity, "objective": "beta"}}',
        "huge-exponent": '{"train": {"lr": 1e999}}',
    }
    cases += [_config_case(f"config-text-{name}", text, "c.json") for name, text in texts.items()]
    cases += [
        _config_case("config-not-utf8", b'{"model": {"arch": "\xff\xfe"}}', "c.json"),
        _config_case("config-dev-zero", None, "c.json", lambda p: p.symlink_to("/dev/zero")),
        _config_case("config-fifo", None, "c.json", os.mkfifo),
        _config_case("config-directory", None, "c.json", Path.mkdir),
        _config_case("config-missing", None, "c.json"),
        _config_case("config-2mb", None, "c.json", lambda p: os.truncate(_touch(p), 2 << 20)),
    ]
    return cases


def _touch(path: Path) -> Path:
    path.touch()
    return path


# --- flags ----------------------------------------------------------------------------------------


def _flag_cases() -> list[Case]:
    train = {
        "--seed": ["--seed", "99999999999999999999999"],
        "--hidden": ["--hidden", "1000000000"],
        "--latent-dim": ["--latent-dim", "4000000000"],
        "--lr": ["--lr", "nan"],
        "--lr ": ["--lr", "inf"],
        "--lr  ": ["--lr", "-1"],
        "--epochs": ["--epochs", "0"],
        "--batch-size": ["--batch-size", "-5"],
        "--hidden ": ["--hidden", "0"],
        "--channels": ["--arch", "conv", "--channels", "100000000"],
        "--stochastic-layers": ["--stochastic-layers", "1000"],
        "--beta": ["--objective", "beta", "--beta", "nan"],
        "--free-bits": ["--free-bits", "-inf"],
        "--warmup-epochs": ["--warmup-epochs", "inf"],
        "--grad-clip": ["--grad-clip", "nan"],
        "--missing-frac": ["--missing-frac", "1.5"],
        "--labelled": ["--labelled", "0"],
        "--mixture-components": ["--mixture-components", "1000"],
        "--mixture-components ": ["--likelihood", "bernoulli", "--mixture-components", "5"],
        "--context-hidden": ["--likelihood", "bernoulli-ar", "--context-hidden", "-3"],
        "--context-hidden ": ["--likelihood", "bernoulli", "--context-hidden", "16"],
        "--prior": ["--prior", "mog:999999999999"],
        "--val-size": ["--val-size", "0"],
        "--iwae-samples": ["--objective", "iwae", "--iwae-samples", "0"],
        "--iwae-samples ": ["--iwae-samples", "50"],
        "--lr-min": ["--lr-min", "1"],
        "--lr-min ": ["--lr-min", "1e-5"],
        "--gaussian-scale": ["--likelihood", "bernoulli", "--gaussian-scale", "0.1"],
        "--channels ": ["--channels", "16", "32"],
        "--hierarchy": ["--hierarchy", "hvae"],
        "--alpha": ["--alpha", "1"],
        "--classifier": ["--classifier", "separate"],
    }
    cases = [Case(f"flag-train{flag.strip()}-{i}", _argv(["train", *args, "--out", "{dir}/out"]), flag.strip())
             for i, (flag, args) in enumerate(train.items())]
    on_run = {
        "sample-n0": (["sample", "{run}", "-n", "0", "--out", "{dir}/s.png"], "-n"),
        "sample-n-huge": (["sample", "{run}", "-n", "1000000000", "--out", "{dir}/s.png"], "-n"),
        "sample-seed": (["sample", "{run}", "--seed", "99999999999999999999999", "--out", "{dir}/s.png"], "--seed"),
        "sample-seed-negative": (["sample", "{run}", "--seed", "-1", "--out", "{dir}/s.png"], "--seed"),
        "sample-out-weights": (["sample", "{run}", "--out", "{run}/model.safetensors"], "--out"),
        "sample-out-weights-force": (["sample", "{run}", "--out", "{run}/model.safetensors", "--force"], "--out"),
        "sample-out-config": (["sample", "{run}", "--out", "{run}/config.json", "--force"], "--out"),
        "sample-out-state": (["sample", "{run}", "--out", "{run}/training_state.safetensors"], "--out"),
        "sample-out-metrics": (["sample", "{run}", "--out", "{run}/metrics.jsonl"], "--out"),
        "sample-out-own-picture": (["sample", "{run}", "--out", "{run}/samples.png"], "--out"),
        "sample-out-run-dir": (["sample", "{run}", "--out", "{run}"], "--out"),
        "sample-out-directory": (["sample", "{run}", "--out", "{dir}"], "--out"),
        "sample-prior": (["sample", "{run}", "--prior", "gmm:0", "--out", "{dir}/s.png"], "gmm"),
        "sample-label": (["sample", "{run}", "--label", "3", "--out", "{dir}/s.png"], "--label"),
        "sample-covariate": (["sample", "{run}", "--covariate", "age=4", "--out", "{dir}/s.png"], "--covariate"),
        "reconstruct-out-weights": (["reconstruct", "{run}", "--out", "{run}/model.safetensors"], "--out"),
        "reconstruct-out-own-picture": (["reconstruct", "{run}", "--out", "{run}/reconstructions.png"], "--out"),
        "reconstruct-out-directory": (["reconstruct", "{run}", "--out", "{dir}"], "--out"),
        "reconstruct-n0": (["reconstruct", "{run}", "-n", "0", "--out", "{dir}/r.png"], "-n"),
        "reconstruct-split": (["reconstruct", "{run}", "--split", "all", "--out", "{dir}/r.png"], "--split"),
        "evaluate-k0": (["evaluate", "{run}", "--iw-samples", "0"], "--iw-samples"),
        "evaluate-limit0": (["evaluate", "{run}", "--limit", "0"], "--limit"),
        "evaluate-seed": (["evaluate", "{run}", "--seed", "1e3"], "--seed"),
        "quality-n1": (["quality", "{run}", "-n", "1"], "-n"),
        "plot-kind": (["plot", "{run}", "--kind", "histogram"], "--kind"),
        "plot-method": (["plot", "{run}", "--method", "mds"], "--method"),
        "plot-limit": (["plot", "{run}", "--limit", "0"], "--limit"),
        "plot-manifold-4d": (["plot", "{run}", "--kind", "manifold"], "--kind manifold"),
        "explore-port": (["explore", "{run}", "--port", "70000", "--no-browser"], "--port"),
        "resume-with-out": (["train", "--resume", "{run}", "--out", "{dir}/o"], "--resume"),
        "resume-change-hidden": (["train", "--resume", "{run}", "--hidden", "8"], "hidden"),
        "train-existing-out": (["train", "--out", "{run}", "--epochs", "1"], "run"),
        "train-init-from-other-model": (["train", "--init-from", "{run}", "--out", "{dir}/o", "--epochs", "1"], "--init-from"),
        "train-init-from-not-a-run": (["train", "--init-from", "{dir}", "--out", "{dir}/o", "--epochs", "1"], "--init-from"),
    }
    cases += [Case(f"flag-{name}", _argv(args), names, needs_run=True) for name, (args, names) in on_run.items()]

    def existing_png(case_dir: Path, run: Path) -> None:
        (case_dir / "old.png").write_bytes(b"a picture the user made")

    def binary_table(case_dir: Path, run: Path) -> None:
        rows = torch.bernoulli(torch.full((120, 10), 0.5), generator=torch.Generator().manual_seed(0))
        np.savez(case_dir / "table.npz", x=rows.numpy())

    cases += [
        Case("flag-train-local-autoregressive-on-a-table",
             _argv(["train", "--dataset", "{dir}/table.npz", "--likelihood", "bernoulli-ar", "--out", "{dir}/o", "--epochs", "1"]),
             "--likelihood", binary_table),
        Case("flag-train-init-from-damaged-weights", _argv(["train", "--config", "{run}/config.json", "--init-from", "{run}",
                                                            "--out", "{dir}/o", "--epochs", "1"]), "--init-from",
             _file_defects("model.safetensors")["truncated-half"], True),
        Case("flag-sample-out-exists", _argv(["sample", "{run}", "--out", "{dir}/old.png"]), "--out", existing_png, True),
        Case("flag-reconstruct-out-exists", _argv(["reconstruct", "{run}", "--out", "{dir}/old.png"]), "--out", existing_png, True),
    ]
    return cases


def _argv(template: list[str]) -> Callable[[Path, Path], list[str]]:
    return lambda case_dir, run: [a.replace("{dir}", str(case_dir)).replace("{run}", str(run)) for a in template]


# --- run directories: every file, every defect -----------------------------------------------------


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}


def _edit_tensors(file: str, edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path, Path], None]:
    def prepare(case_dir: Path, run: Path) -> None:
        tensors, metadata = _read_tensors(run / file)
        edit(tensors)
        save_file(tensors, str(run / file), metadata=metadata)

    return prepare


def _first(tensors: dict[str, torch.Tensor], prefix: str = "") -> str:
    return next(k for k, v in tensors.items() if k.startswith(prefix) and v.is_floating_point() and v.numel() > 1)


def _set_first(prefix: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def edit(tensors: dict) -> None:
        name = _first(tensors, prefix)
        tensors[name] = value(tensors[name])

    return edit


def _with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = math.nan
    return t


def _with_inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = -math.inf
    return t


def _file_defects(file: str) -> dict[str, Callable[[Path, Path], None]]:
    """Defects any file can have, whatever its format."""
    def write(data: bytes) -> Callable[[Path, Path], None]:
        return lambda case_dir, run: (run / file).write_bytes(data)

    def replace(make: Callable[[Path], None]) -> Callable[[Path, Path], None]:
        def prepare(case_dir: Path, run: Path) -> None:
            (run / file).unlink()
            make(run / file)

        return prepare

    def truncate(fraction: float) -> Callable[[Path, Path], None]:
        return lambda case_dir, run: os.truncate(run / file, int((run / file).stat().st_size * fraction))

    return {
        "empty": write(b""),
        "garbage": write(os.urandom(4096)),
        "truncated-half": truncate(0.5),
        "truncated-7-bytes": lambda case_dir, run: os.truncate(run / file, 7),
        "dev-zero": replace(lambda p: p.symlink_to("/dev/zero")),
        "fifo": replace(lambda p: os.mkfifo(p)),
        "directory": replace(lambda p: p.mkdir()),
        "dangling-link": replace(lambda p: p.symlink_to(p.parent / "nowhere")),
        "sparse-20gb": replace(lambda p: os.truncate(_touch(p), 20 << 30)),
    }


def _safetensors_defects(file: str, prefix: str) -> dict[str, Callable[[Path, Path], None]]:
    def header(raw: bytes) -> Callable[[Path, Path], None]:
        return lambda case_dir, run: (run / file).write_bytes(len(raw).to_bytes(8, "little") + raw)

    return {
        "header-length-huge": lambda d, r: (r / file).write_bytes((2**62).to_bytes(8, "little") + b"{}"),
        "header-not-json": header(b"{not json"),
        "header-deep": header(b"[" * DEEP),
        "header-offsets-out-of-file": header(json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()),
        "float64": _edit_tensors(file, _set_first(prefix, lambda t: t.double())),
        "bfloat16": _edit_tensors(file, _set_first(prefix, lambda t: t.bfloat16())),  # float16 is what export --half writes: it loads
        "int-weights": _edit_tensors(file, _set_first(prefix, lambda t: t.to(torch.int32))),
        "nan": _edit_tensors(file, _set_first(prefix, _with_nan)),
        "inf": _edit_tensors(file, _set_first(prefix, _with_inf)),
        "missing-tensor": _edit_tensors(file, lambda ts: ts.pop(_first(ts, prefix))),
        "extra-tensor": _edit_tensors(file, lambda ts: ts.update({f"{prefix}extra.weight": torch.zeros(3)})),
        "wrong-shape": _edit_tensors(file, _set_first(prefix, lambda t: t[..., :-1].contiguous())),
        "transposed": _edit_tensors(file, _set_first(prefix, lambda t: t.T.contiguous() if t.dim() == 2 else t[:-1])),
    }


def _edit_config(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def prepare(case_dir: Path, run: Path) -> None:
        raw = json.loads((run / "config.json").read_text())
        edit(raw)
        (run / "config.json").write_text(json.dumps(raw))

    return prepare


def _set(section: str, key: str, value) -> Callable[[dict], None]:
    return lambda raw: raw[section].__setitem__(key, value)


def _run_cases() -> list[Case]:
    sample = _argv(["sample", "{run}", "--out", "{dir}/s.png"])
    resume = _argv(["train", "--resume", "{run}", "--epochs", "5", "--no-plots"])
    cases = []
    for file, command, prefix in (("model.safetensors", sample, ""), ("training_state.safetensors", resume, "model.")):
        defects = {**_file_defects(file), **_safetensors_defects(file, prefix)}
        cases += [Case(f"run-{file}-{name}", command, file, prepare, True) for name, prepare in defects.items()]
    cases.append(Case("run-model.safetensors-missing", sample, "model.safetensors",
                      lambda d, r: (r / "model.safetensors").unlink(), True))
    state = "training_state.safetensors"
    cases += [
        Case("run-state-missing", resume, state, lambda d, r: (r / state).unlink(), True),
        Case("run-state-best-nan", resume, state, _edit_tensors(state, lambda ts: ts.update({"best.x": torch.tensor([math.nan, 1.0])})), True),
        Case("run-state-no-generator", resume, state, _edit_tensors(state, lambda ts: ts.pop("generator")), True),
        Case("run-state-generator-float", resume, state, _edit_tensors(state, lambda ts: ts.update(generator=ts["generator"].float())), True),
    ]
    for key, value in (("epoch", "-4"), ("epoch", "ten"), ("best_epoch", "99"), ("param_groups", "[["), ("param_groups", "{}"),
                       ("finished", "maybe"), ("metrics", "[1, 2]"), ("metrics", "[" * DEEP), ("format", "other"),
                       ("initial_loss", "loss")):
        def prepare(case_dir: Path, run: Path, key=key, value=value) -> None:
            tensors, metadata = _read_tensors(run / state)
            save_file(tensors, str(run / state), metadata={**metadata, key: value})

        cases.append(Case(f"run-state-metadata-{key}-{value[:8]}", resume, state, prepare, True))

    metrics = "metrics.jsonl"
    for name, prepare in _file_defects(metrics).items():
        if name in ("empty", "truncated-half"):
            continue  # an empty metrics file is a run without epochs; a cut line is caught below
        cases.append(Case(f"run-{metrics}-{name}", sample, metrics, prepare, True))
    for name, text in (("not-json", "{epoch: 1}\n"), ("list", "[1, 2]\n"), ("deep", "[" * DEEP + "\n"),
                       ("deep-object", '{"a": ' * DEEP + "\n"), ("no-epoch", '{"loss": 1.0}\n'), ("epoch-string", '{"epoch": "1"}\n'),
                       ("cut-line", '{"epoch": 1, "train_neg'), ("not-utf8", '{"epoch": 1, "x": "\udcff"}\n')):
        data = text.encode("utf-8", "surrogateescape")
        cases.append(Case(f"run-{metrics}-{name}", sample, metrics, lambda d, r, data=data: (r / metrics).write_bytes(data), True))

    config = "config.json"
    for name, prepare in _file_defects(config).items():
        cases.append(Case(f"run-{config}-{name}", sample, config, prepare, True))
    edits = {
        "hidden-float": _set("model", "hidden", [2e7]),
        "hidden-20M": _set("model", "hidden", [20_000_000]),
        "hidden-string": _set("model", "hidden", "44"),
        "latent-string": _set("model", "latent_dim", "4"),
        "latent-4e9": _set("model", "latent_dim", 4_000_000_000),
        "input-shape-missing": _set("model", "input_shape", None),
        "input-shape-huge": _set("model", "input_shape", [1, 100000, 100000]),
        "input-shape-5d": _set("model", "input_shape", [1, 1, 1, 8, 8]),
        "arch-unknown": _set("model", "arch", "transformer"),
        "likelihood-int": _set("model", "likelihood", 3),
        "format-99": lambda raw: raw.__setitem__("format", 99),
        "section-missing-object": lambda raw: raw.__setitem__("model", "mlp"),
        "deep": lambda raw: raw["model"].__setitem__("hidden", json.loads("[" * 30 + "]" * 30)),
        "epochs-bool": _set("train", "epochs", True),
        "compile-yes": _set("train", "compile", "yes"),
        "seed-huge": _set("train", "seed", 10**30),
        "dataset-int": _set("data", "dataset", 7),
    }
    cases += [Case(f"run-{config}-edit-{name}", sample, config, _edit_config(edit), True) for name, edit in edits.items()]
    # A config edited to a size that still parses: the weights no longer match it.
    for name, edit in {"hidden-changed": _set("model", "hidden", [33]), "latent-changed": _set("model", "latent_dim", 5),
                       "prior-changed": _set("model", "prior", "mog:3"), "arch-changed": _set("model", "arch", "gated")}.items():
        cases.append(Case(f"run-{config}-edit-{name}", sample, "model.safetensors", _edit_config(edit), True))
        cases.append(Case(f"run-{config}-edit-{name}-resume", resume, "training_state.safetensors", _edit_config(edit), True))
    cases.append(Case("run-not-a-directory", _argv(["sample", "{dir}/nothing", "--out", "{dir}/s.png"]), "nothing"))
    cases.append(Case("run-no-config", sample, config, lambda d, r: (r / config).unlink(), True))
    return cases


CASES = _config_cases() + _config_file_cases() + _flag_cases() + _run_cases()


def test_the_corpus_is_large_its_names_unique_and_the_readme_counts_it():
    assert len(CASES) >= 250
    assert len({case.name for case in CASES}) == len(CASES)
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8").split())
    assert f"tests/test_bad_input_corpus.py` generates {len(CASES)} such cases" in readme


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, trained_run, capsys):
    run_case(case, tmp_path, trained_run, capsys)
