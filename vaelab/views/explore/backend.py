"""What the latent explorer computes, without HTTP: decode a z, encode an image, the 2-D latent map.

Everything the page shows comes from here, so it is testable by calling methods:

- the latent dimensions ranked by Burda et al.'s (2016, §5.2) activity statistic
  A_d = Cov_x(E_q(z|x)[z_d]) over the test set (active when above 0.01), each with its mean
  KL(q(z_d|x) || N(0, 1)) — the nats that dimension carries;
- a 2-D map of the test set's posterior means: the means themselves for a 2-D latent space, else
  their first two principal components, whose inverse ``mean + components^T · point`` takes a clicked
  point back to latent space (the point's coordinates along the other components are the mean's);
- decoded images: the mean of p(x|z), upscaled with nearest-neighbour so pixels stay crisp.

Requests are validated here (z length, finite values, labels, uploads) and refused with
:class:`~vaelab.views.explore.errors.RequestError`. One lock serialises the model: the server answers on
many threads, a torch module is not meant to be called concurrently.
"""

from __future__ import annotations

import base64
import io
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vaelab.errors import VaelabError
from vaelab.evaluation.latents import ACTIVE_UNIT_THRESHOLD, latent_summary
from vaelab.views.explore.errors import RequestError
from vaelab.views.explore.uploads import MAX_SIDE, MAX_UPLOAD_BYTES, MIN_SIDE, read_image
from vaelab.models.vae import VAE
from vaelab.views.images import image_grid

MAP_POINTS = 2000  # test points drawn on the map: enough to see the clusters, light enough for a canvas
DISPLAY_PIXELS = 192  # the decoded image's smaller side is upscaled to at least this
Z_LIMIT = 1000.0  # |z_d| above this is a typo, not an exploration of N(0, I)


@dataclass(frozen=True)
class LatentMap:
    """A linear 2-D view of latent space: ``point = (z - mean) @ components.T``, inverse ``mean + point @ components``.

    ``components: [2, D]`` has orthonormal rows (principal axes, or the first coordinate axes when
    D <= 2, where the map is the latent space itself); ``explained``: variance fraction per axis.
    """

    method: str  # "direct" or "pca"
    mean: torch.Tensor  # [D]
    components: torch.Tensor  # [2, D]
    explained: tuple[float, float]

    @classmethod
    def fit(cls, means: torch.Tensor) -> LatentMap:
        """Fit to posterior means ``[N, D]``: identity for D <= 2, PCA by SVD of the centred means otherwise."""
        n, d = means.shape
        total = float(means.var(0).sum()) if n > 1 else 0.0
        if d <= 2:
            variances = means.var(0).tolist() if n > 1 else [0.0] * d
            explained = tuple(v / total if total > 0 else 0.0 for v in variances + [0.0] * (2 - d))
            return cls("direct", torch.zeros(d), torch.eye(2, d), explained)  # type: ignore[arg-type]
        centre = means.mean(0)
        _, singular, vh = torch.linalg.svd(means - centre, full_matrices=False)
        components = vh[:2]
        # Fix SVD's arbitrary signs: the largest loading of each axis is positive, so the map is reproducible.
        signs = components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
        components = components * signs
        variances = (singular[:2].square() / max(n - 1, 1)).tolist()
        explained = tuple(v / total if total > 0 else 0.0 for v in variances)
        return cls("pca", centre, components, explained)  # type: ignore[arg-type]

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``z: [..., D]`` -> map coordinates ``[..., 2]``."""
        return (z - self.mean) @ self.components.T

    def inverse(self, point: torch.Tensor) -> torch.Tensor:
        """Map coordinates ``[..., 2]`` -> the latent vector ``[..., D]`` they stand for."""
        return self.mean + point @ self.components


def png_data_url(images: torch.Tensor) -> str:
    """The first image of ``images: [N, C, H, W]`` as a PNG ``data:`` URL, upscaled nearest-neighbour."""
    height, width = images.shape[-2:]
    scale = max(1, math.ceil(DISPLAY_PIXELS / min(height, width)))
    buffer = io.BytesIO()
    image_grid(images[:1].clamp(0, 1).cpu(), nrow=1, padding=0, scale=scale).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


MAX_INT_INPUT = 10**30  # integers beyond this in a request are refused before any conversion


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > MAX_INT_INPUT:  # float(10**400) would overflow
        raise RequestError(f"{name} must be a number of at most 1e30 in size")
    if not math.isfinite(value):
        raise RequestError(f"{name} must be finite, got {value}")
    return float(value)


def _vector(values: Any, length: int, name: str, limit: float) -> torch.Tensor:
    if not isinstance(values, (list, tuple)):
        raise RequestError(f"{name} must be a list of {length} numbers")
    if len(values) != length:
        raise RequestError(f"{name} must have {length} entries, got {len(values)}")
    numbers = [_number(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if any(abs(v) > limit for v in numbers):
        raise RequestError(f"{name}: values must lie within ±{limit:g}")
    return torch.tensor(numbers, dtype=torch.float32)


class ExplorerBackend:
    """A trained image VAE and its test set, ready to answer the explorer's requests.

    ``x: [N, C, H, W]`` are test images (as the model was evaluated on them), ``y: [N]`` their labels
    or None, ``class_names`` the label names. Label-conditional models take a label in every
    decode and encode; their class names come from the model's config.
    """

    def __init__(
        self,
        model: VAE,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        class_names: Sequence[str] | None = None,
        *,
        title: str = "",
        map_points: int = MAP_POINTS,
        seed: int = 0,
    ) -> None:
        shape = tuple(model.config.input_shape or ())
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise VaelabError(
                f"the explorer needs an image model (data shaped [C, H, W] with 1 or 3 channels); "
                f"this one models data of shape {list(shape)}"
            )
        if model.condition.is_continuous:
            raise VaelabError(f"the explorer handles unconditional and label-conditional models, not condition={model.condition.name!r}")
        self.model = model.eval()
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.label_conditional = model.condition.is_label
        self.title = title
        self.device = model.device
        self._lock = threading.Lock()
        names = model.config.class_names if self.label_conditional else class_names
        self.class_names: list[str] | None = list(names) if names else None
        if self.label_conditional:
            if y is None:
                raise VaelabError("a label-conditional model needs the labels of its test set")
            labelled = y >= 0  # -1 marks a hidden label
            x, y = x[labelled], y[labelled]

        with self._lock:
            summary = latent_summary(model, x, y if self.label_conditional else None)
        means, variance = summary.means, summary.mean_variance  # [N, D], [D]
        self.kl_per_dim = summary.kl_per_dim
        self.activity = variance
        self.order = sorted(range(model.latent_size), key=lambda d: -float(variance[d]))
        self.map = LatentMap.fit(means)
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(means), generator=generator)[:map_points].sort().values
        self.map_coords = self.map.project(means[keep])  # [M, 2]
        self.map_labels = y[keep].tolist() if y is not None else None

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any) -> ExplorerBackend:
        """Load a run and its test split (the same pipeline as training: splits, binarisation)."""
        from vaelab.data.pipeline import load_data
        from vaelab.rundir import load

        run = load(run_dir, device=device)
        shape = run.config.model.input_shape or ()
        if len(shape) != 3:
            raise VaelabError(f"{run_dir}: the explorer needs image data; this run models {list(shape)}-shaped rows")
        dataset = load_data(run.config)
        title = f"{os.path.basename(os.path.normpath(run_dir))} · {run.config.data.dataset}"
        return cls(run.model, dataset.test.x, dataset.test.y, dataset.classes, title=title, **kwargs)

    def _condition(self, label: int | None, batch: int) -> torch.Tensor | None:
        return None if label is None else torch.full((batch,), label, dtype=torch.int64, device=self.device)

    def _decode_mean(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.model.decode(z, c).mean

    def _label(self, label: Any) -> int | None:
        if not self.label_conditional:
            if label is not None:
                raise RequestError("label: this model is not conditional on labels")
            return None
        if label is None:
            raise RequestError("label: required by this label-conditional model")
        digits = label.strip().lstrip("-") if isinstance(label, str) else ""
        if digits and len(digits) <= 6 and digits.isascii() and digits.isdigit():  # "²".isdigit() is True
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(self.class_names or ()):
            shown = repr(label) if len(repr(label)) <= 40 else repr(label)[:40] + "..."
            raise RequestError(f"label must be an integer in [0, {len(self.class_names or ())}), got {shown}")
        return label

    def info(self) -> dict[str, Any]:
        """What the page needs to build itself: dimensions in activity order, the map, labels, limits."""
        channels, height, width = self.shape
        return {
            "title": self.title,
            "latent_dim": self.model.latent_size,
            "input_shape": [channels, height, width],
            "likelihood": self.model.config.likelihood,
            "dims": [
                {
                    "index": d,
                    "kl": float(self.kl_per_dim[d]),
                    "activity": float(self.activity[d]),
                    "active": bool(self.activity[d] > ACTIVE_UNIT_THRESHOLD),
                }
                for d in self.order
            ],
            "label_conditional": self.label_conditional,
            "class_names": self.class_names,
            "map": {
                "method": self.map.method,
                "explained": list(self.map.explained),
                "points": [[round(a, 4), round(b, 4)] for a, b in self.map_coords.tolist()],
                "labels": self.map_labels,
            },
            "limits": {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_side": MAX_SIDE, "min_side": MIN_SIDE},
        }

    @torch.no_grad()
    def decode(self, z: Any, label: Any = None) -> dict[str, Any]:
        """The mean of p(x|z[, label]) as a PNG data URL, and where z lies on the map."""
        latent = _vector(z, self.model.latent_size, "z", Z_LIMIT)
        c = self._condition(self._label(label), 1)
        with self._lock:
            image = self._decode_mean(latent.unsqueeze(0).to(self.device), c)
        return {"image": png_data_url(image), "point": self.map.project(latent).tolist()}

    def decode_point(self, point: Any, label: Any = None) -> dict[str, Any]:
        """Decode the latent vector a map point stands for (the PCA inverse): z, image and point."""
        xy = _vector(point, 2, "point", Z_LIMIT)
        z = self.map.inverse(xy).tolist()
        return {"z": z, **self.decode(z, label)}

    @torch.no_grad()
    def encode(self, data: bytes, label: Any = None, invert: bool = False) -> dict[str, Any]:
        """Encode uploaded image bytes: z = E[q(z|x)], its map point, the reconstruction and the resized input."""
        x, note = read_image(data, self.shape, invert=invert)
        c = self._condition(self._label(label), 1)
        with self._lock:
            z = self.model.encode(x.to(self.device), c).mean  # [1, D]
            reconstruction = self._decode_mean(z, c)
        z = z[0].cpu()
        return {
            "z": z.tolist(),
            "point": self.map.project(z).tolist(),
            "input": png_data_url(x),
            "reconstruction": png_data_url(reconstruction),
            "note": note,
        }
