"""Two models scored on the same images: the paired difference of their NLLs and its standard error.

An NLL over the 10,000 binarised Fashion-MNIST test images carries a standard error of ~0.76 nats,
almost all of it the spread between images (a coat costs more nats than a sandal). Two models share
that spread, so the difference of their NLLs image by image has a far smaller standard error: whether
one model beats another is read from the paired difference, not from whether two intervals overlap.

``vaelab evaluate`` therefore keeps every image's NLL and negative ELBO beside its JSON, in
``evaluation-<split>[-first<N>]-K<K>.per-example.safetensors``, with a fingerprint of each image (a
hash of its values as evaluated), and :func:`compare_runs` pairs two runs' files image by image over
the examples both scored, after checking from the fingerprints that they are the same images.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from vaelab import rundir
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

SUFFIX = ".per-example.safetensors"
_FIELDS = ("nll", "negative_elbo")


def example_fingerprints(x: torch.Tensor) -> torch.Tensor:
    """One int64 per example ``x: [N, ...]``: the first 8 bytes of the BLAKE2b hash of its float32 values.

    Two evaluations scored the same image exactly when the fingerprints agree (up to a 2^-64 chance)."""
    rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).contiguous().numpy()
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in rows)
    return torch.from_numpy(np.frombuffer(digests, dtype="<i8").copy())


def per_example_path(evaluation_json: Path) -> Path:
    """The per-example file that belongs to an ``evaluation-....json``."""
    return evaluation_json.with_name(evaluation_json.name.removesuffix(".json") + SUFFIX)


def save_per_example(path: Path, values: dict[str, torch.Tensor], fingerprints: torch.Tensor,
                     metadata: dict[str, str]) -> None:
    """Write each example's figures (``values``: ``nll`` and ``negative_elbo``, ``[N]``) and fingerprints."""
    tensors = {name: values[name].detach().to("cpu", torch.float64).contiguous() for name in _FIELDS}
    tensors["fingerprint"] = fingerprints.to("cpu", torch.int64).contiguous()
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


@dataclass(frozen=True)
class PerExample:
    """One evaluation's figures per example, in the split's stored order."""

    path: Path
    nll: torch.Tensor  # [N], nats
    negative_elbo: torch.Tensor  # [N], nats
    fingerprint: torch.Tensor  # [N], int64
    metadata: dict[str, str]

    def __len__(self) -> int:
        return self.nll.shape[0]


def read_per_example(path: Path) -> PerExample:
    """A per-example file, checked: three 1-D tensors of one length, of the dtypes written."""
    tensors, metadata = rundir.read_safetensors(path)
    expected = {"nll": torch.float64, "negative_elbo": torch.float64, "fingerprint": torch.int64}
    if set(tensors) != set(expected) or any(tensors[k].dtype != d or tensors[k].dim() != 1 for k, d in expected.items()):
        raise VaelabError(f"{path}: not a per-example evaluation file (expected 1-D tensors "
                          f"nll, negative_elbo (float64) and fingerprint (int64))")
    if len({t.shape[0] for t in tensors.values()}) != 1:
        raise VaelabError(f"{path}: its tensors have different lengths")
    return PerExample(path, tensors["nll"], tensors["negative_elbo"], tensors["fingerprint"], metadata)


_NAME = re.compile(r"evaluation-(?P<split>[a-z]+)(?:-first(?P<limit>\d+))?-K(?P<k>\d+)" + re.escape(SUFFIX))


def find_per_example(run_dir: Path, split: str, iw_samples: int) -> Path:
    """The run's per-example file for ``split`` and K with the most examples (the whole split if there)."""
    candidates = []
    for path in run_dir.glob(f"evaluation-{split}*-K{iw_samples}{SUFFIX}"):
        match = _NAME.fullmatch(path.name)
        if match:  # the glob's * may also match names that are not ours
            candidates.append((math.inf if match["limit"] is None else int(match["limit"]), path))
    if not candidates:
        raise VaelabError(f"{run_dir}: no per-example evaluation of the {split} split at K = {iw_samples}; "
                          f"run `vaelab evaluate {run_dir} --split {split} --iw-samples {iw_samples}` first")
    return max(candidates)[1]


def paired_difference(a: PerExample, b: PerExample) -> dict[str, Any]:
    """B minus A over the examples both scored (the first min(len) of the split), with standard errors.

    Raises if the fingerprints show that the two evaluations scored different images there."""
    n = min(len(a), len(b))
    if n == 0:
        raise VaelabError(f"{a.path} or {b.path}: no examples to compare")
    differs = (a.fingerprint[:n] != b.fingerprint[:n]).nonzero()
    if differs.numel():
        raise VaelabError(f"{a.path} and {b.path} scored different images (first at example {int(differs[0])}): "
                          "compare runs on the same dataset, binarisation and split")
    result: dict[str, Any] = {"n": n}
    for name in _FIELDS:
        va, vb = getattr(a, name)[:n], getattr(b, name)[:n]
        delta = vb - va
        result[name] = {
            "a": va.mean().item(),
            "b": vb.mean().item(),
            "difference": delta.mean().item(),  # b - a: negative when B is better
            "paired_standard_error": (delta.std().item() / math.sqrt(n)) if n > 1 else 0.0,
            "unpaired_standard_error": math.sqrt((va.var().item() + vb.var().item()) / n) if n > 1 else 0.0,
            "b_lower_fraction": (delta < 0).double().mean().item(),
        }
    return result


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, split: str = "test",
                 iw_samples: int = 5000) -> dict[str, Any]:
    """:func:`paired_difference` of two runs' saved per-example evaluations (``vaelab evaluate`` writes them)."""
    runs = [rundir.check_run_dir(r) for r in (run_a, run_b)]
    a, b = (read_per_example(find_per_example(r, split, iw_samples)) for r in runs)
    return {"a": str(run_a), "b": str(run_b), "split": split, "iw_samples": iw_samples,
            "files": [str(a.path), str(b.path)], **paired_difference(a, b)}
