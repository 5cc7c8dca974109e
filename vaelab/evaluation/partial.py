"""The finished batches of a long evaluation, kept on disk so that an interrupted one resumes.

At K = 5000 a convolutional model's 10,000 test images take about an hour here; an interruption at
minute 55 should not cost 55 minutes. :func:`~vaelab.evaluation.evidence.evaluate` seeds each batch
of images by its index, so a batch's terms do not depend on when, or in which process, it was
computed. Every process therefore writes the batches it finished to a file of its own beside the
result (``evaluation-<...>-K<K>.partial-<id>.safetensors``, rewritten atomically at most every
:data:`SAVE_SECONDS` and when interrupted), and running the same evaluation again — with any number of
processes — reads all of them, skips what they hold and computes the rest. Each file carries a key
of what it belongs to (the model's weights, the images, K, the seed, the batching), so a file of
another evaluation is never mixed in; all of them are removed once the result is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path

import torch

from vaelab.errors import VaelabError
from vaelab.rundir import read_safetensors, write_safetensors

log = logging.getLogger(__name__)

FORMAT = "vaelab-partial-evaluation-1"
SAVE_SECONDS = 60.0  # at most this much finished work is lost when a process is killed
Batches = dict[int, dict[str, torch.Tensor]]  # first example's index -> that batch's per-example terms


def evaluation_key(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor | None, **plan: object) -> str:
    """A digest of everything a batch's terms depend on: the weights, the images (and covariates) and
    ``plan`` (K, seed, batch and chunk sizes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(_bytes(tensor))
    for tensor in (x, c):
        if tensor is not None:
            digest.update(_bytes(tensor))
    digest.update(json.dumps(plan, sort_keys=True).encode())
    return digest.hexdigest()


def _bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's values as bytes (flattened first: a 0-dim tensor, a learned sigma, has no byte view)."""
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class PartialEvaluation:
    """This process's finished batches of the evaluation whose result goes to ``result_path``."""

    def __init__(self, result_path: Path) -> None:
        self.result_path = Path(result_path)
        self.stem = self.result_path.name.removesuffix(".json")
        self.path = self.result_path.with_name(f"{self.stem}.partial-{uuid.uuid4().hex[:12]}.safetensors")
        self.key: str | None = None
        self.batches: Batches = {}
        self.saved_at = time.monotonic()
        self.unsaved = False

    def files(self) -> list[Path]:
        return sorted(self.result_path.parent.glob(f"{self.stem}.partial-*.safetensors"))

    def load(self, key: str) -> Batches:
        """The batches every file of this evaluation holds (files of another evaluation are ignored)."""
        self.key = key
        finished: Batches = {}
        for path in self.files():
            finished.update(_read(path, key))
        return finished

    def record(self, begin: int, terms: dict[str, torch.Tensor]) -> None:
        """Keep a finished batch; write the file when :data:`SAVE_SECONDS` have passed since the last write."""
        self.batches[begin] = terms
        self.unsaved = True
        if time.monotonic() - self.saved_at >= SAVE_SECONDS:
            self.save()

    def save(self) -> None:
        if not self.unsaved:
            return
        assert self.key is not None, "load() names the evaluation before anything is saved"
        tensors = {f"{begin}.{name}": value for begin, terms in self.batches.items() for name, value in terms.items()}
        write_safetensors(self.path, tensors, {"format": FORMAT, "key": self.key})
        self.saved_at, self.unsaved = time.monotonic(), False

    def remove_all(self) -> None:
        """Remove every partial file of this evaluation, and temporaries of their interrupted writes."""
        for path in [*self.files(), *self.result_path.parent.glob(f".{self.stem}.partial-*.tmp")]:
            path.unlink(missing_ok=True)


def _read(path: Path, key: str) -> Batches:
    """A partial file's batches; none if it belongs to another evaluation, or (with a warning) if it
    cannot be read: its batches are then computed again."""
    try:
        tensors, metadata = read_safetensors(path)
    except VaelabError as exc:
        log.warning("%s; its batches will be computed again", exc)
        return {}
    if metadata.get("format") != FORMAT or metadata.get("key") != key:
        return {}
    batches: Batches = {}
    for name, value in tensors.items():
        begin, _, term = name.partition(".")
        if not begin.isdigit() or not term:
            log.warning("%s: not a partial evaluation (tensor %r); its batches will be computed again", path, name)
            return {}
        batches.setdefault(int(begin), {})[term] = value
    return batches
