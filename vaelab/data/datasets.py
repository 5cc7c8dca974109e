"""Datasets as the trainer sees them: fixed train/val/test splits of float32 tensors.

Images are ``[N, C, H, W]`` float32 in [0, 1]; tabular data ``[N, D]`` float32; labels ``[N]``
int64 or ``None``. Every split is fixed and documented, so that two runs (or two papers) that name
the same dataset evaluate on the same examples.

Named datasets (:data:`DATASETS`):

* ``mnist``, ``fashion-mnist`` - four IDX files, ``.gz`` or uncompressed. With a ``data_dir``
  argument they must be in ``<data_dir>/<name>/``: a user who names a place means that place, so
  nothing else is searched and nothing downloaded, and a missing ``data_dir`` is an error.
  Without it they are searched in this order, the first directory holding all four files wins:

  1. ``$VAELAB_DATA/<name>/``,
  2. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` package),
  3. ``$XDG_CACHE_HOME/vaelab/<name>/`` or ``~/.cache/vaelab/<name>/`` (``$VAELAB_CACHE`` moves it).

  ``data_dir`` and ``$VAELAB_DATA`` are *roots* holding one sub-directory per dataset, never the
  files themselves: MNIST and Fashion-MNIST use identical file names, so files lying directly in a
  root could be either. If nothing is found and ``download`` is true, the missing files are
  downloaded into the cache directory (3.); offline, the error names the folder and the files to
  put there by hand. Test = the official 10k ``t10k`` files in file order;
  validation = the last ``val_size`` (default 5000) examples of the training file; train = the
  rest, in file order (55000 / 5000 / 10000).
* ``digits`` - scikit-learn's 8x8 UCI digits (1797 images, values 0..16 scaled by 1/16). It has no
  official split, so one is fixed with ``numpy.random.default_rng(0).permutation(1797)``: the first
  360 indices are test, the next 180 validation, the remaining 1257 train. The ``seed`` argument
  does not change it.
* ``shapes`` - 6000 coloured shapes on black, 32x32 RGB, generated on the fly by
  :func:`vaelab.data.shapes.make_shapes` (``n=6000, size=32, seed=0``): no file, no download, the
  same pixels everywhere. Labels are the shape (circle, square, triangle); the covariates ``c`` are
  the true factors (:data:`~vaelab.data.shapes.FACTOR_NAMES`: colour index, r, g, b in 0..255, x, y,
  scale). Split by index in generation order (the images are i.i.d.): test = images 5000..5999,
  validation = the last ``val_size`` (default 500) of images 0..4999, train = the rest (4500 / 500 /
  1000). ``make_shapes(6000)`` rebuilds everything, object masks included. The ``seed`` argument does
  not change it.

User data (any ``name`` that is not a registered name but an existing path):

* a folder of images (anything Pillow reads): class sub-folders become labels in sorted name
  order; a flat folder is unlabelled. All images must have the same size; they stay gray if every
  image is gray, otherwise all are converted to RGB (alpha dropped).
* an ``.npz`` file with ``x`` (``[N, H, W]`` or channels-first ``[N, C, H, W]`` images with C 1 or
  3, or ``[N, D]`` tabular; uint8 is divided by 255, floats kept), optional ``y`` (``[N]`` integer
  labels 0..K-1, -1 where missing), optional ``c`` (``[N]`` or ``[N, K]`` continuous covariates, NaN
  where missing) and ``c_names`` (``[K]`` strings).

Class folders whose names are numbers (``30/``) or ``name=value`` lists (``angle=30,scale=2/``) also
give continuous covariates (:func:`covariates_from_class_names`), for ``--condition covariates``.

  User data is split with ``numpy.random.default_rng(seed).permutation(N)``: the first
  ``max(1, N // 10)`` indices are test, the next ``val_size`` (default ``max(1, N // 10)``)
  validation, the rest train; at least 3 examples are required.

Every reader treats its input as possibly broken or hostile and fails with a one-line
:class:`VaelabError` naming the file: only regular files are read (a FIFO would hang, a symlink to
``/dev/zero`` never end), sizes promised by headers are checked before anything is allocated
(:data:`~vaelab.data.idx.MAX_ARRAY_BYTES`, :data:`MAX_IMAGE_PIXELS`), labels must lie below
:data:`MAX_CLASSES`, and ``.npz`` files are never unpickled.

Each :class:`Dataset` records its :attr:`~Dataset.provenance`: ``(path, sha256)`` of every file
read, hashed while reading, or a description of embedded data.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaelab.data import download as downloader
from vaelab.data import shapes
from vaelab.data.idx import (
    MAX_ARRAY_BYTES,
    gigabytes,
    one_line,
    read_file_hashed,
    read_idx_pair,
    read_into,
)
from vaelab.errors import VaelabError

SYSTEM_DATA_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
DATA_ENV = "VAELAB_DATA"


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # [N, C, H, W] in [0, 1] (images) or [N, D] (tabular), float32
    y: torch.Tensor | None  # [N] int64 class indices (-1: label hidden), or None when unlabelled
    c: torch.Tensor | None = None  # [N, K] float32 continuous covariates (NaN: missing), or None

    def __len__(self) -> int:
        return len(self.x)


# Where a dataset's examples came from: (absolute path, sha256 of the file's bytes) for every file
# read, in reading order, or a description of data shipped inside a library ("embedded: ...").
Provenance = tuple[tuple[str, str], ...] | str


@dataclass(frozen=True)
class Dataset:
    name: str  # "fashion-mnist", "digits", or the user's path
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...] | None  # class names, index = label
    source: str  # where it was found (directory/file), or "scikit-learn"
    covariate_names: tuple[str, ...] | None = None  # names of the columns of ``Split.c``
    provenance: Provenance = ()  # see Provenance; () when unknown (a Dataset built by hand)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example shape, e.g. ``(1, 28, 28)`` or ``(D,)``."""
        return tuple(self.train.x.shape[1:])


def _to_float(x: np.ndarray, scale: float) -> torch.Tensor:
    """numpy -> float32 tensor divided by ``scale``, vectorised (no per-image Python)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(scale)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64))


def _take(x: torch.Tensor, y: torch.Tensor | None, index: np.ndarray, c: torch.Tensor | None = None) -> Split:
    index_t = torch.from_numpy(index)
    return Split(x[index_t], None if y is None else y[index_t], None if c is None else c[index_t])


@dataclass(frozen=True)
class _UserData:
    """What a user's folder or ``.npz`` holds, before splitting."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None
    c: torch.Tensor | None = None
    covariate_names: tuple[str, ...] | None = None
    provenance: tuple[tuple[str, str], ...] = ()


def _check_val_size(source: str, val_size: int, available: int) -> None:
    """``available`` counts the examples val and train share; train must keep at least one."""
    if not 0 <= val_size < available:
        raise VaelabError(
            f"{source}: val_size must be between 0 and {available - 1}, got {val_size}"
        )


CACHE_ENV = "VAELAB_CACHE"  # overrides the cache root (downloads and the quality classifier)


def cache_dir() -> Path:
    """vaelab's per-user cache: ``$VAELAB_CACHE``, else ``$XDG_CACHE_HOME/vaelab`` or ``~/.cache/vaelab``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab"


# ---------------------------------------------------------------------------------------------
# IDX datasets (MNIST layout)

IDX_FILES = {  # role -> upstream file name without ".gz"
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _gz_names(roles: list[str]) -> str:
    """The upstream file names of ``roles``, for messages telling a user what to put where."""
    return ", ".join(f"{IDX_FILES[role]}.gz" for role in roles)


@dataclass(frozen=True)
class IdxSource:
    """A dataset shipped as MNIST's four IDX files, found locally or downloaded from mirrors."""

    name: str
    md5: dict[str, str]  # role -> md5 of the upstream .gz file (checked on download only)
    mirrors: tuple[str, ...]  # base URLs, tried in order
    classes: tuple[str, ...]
    shape: tuple[int, ...] = (1, 28, 28)
    sizes: tuple[int, int] = (60000, 10000)  # official train, test counts

    def search_dirs(self, data_dir: str | os.PathLike | None) -> list[Path]:
        """Candidate directories in search order: only ``<data_dir>/<name>`` when ``data_dir`` is given."""
        if data_dir:
            root = Path(data_dir).expanduser()
            if not root.is_dir():
                raise VaelabError(
                    f"data directory not found: {root} (expected a folder holding {self.name}/)"
                )
            return [root / self.name]
        roots = [os.environ.get(DATA_ENV) or None, SYSTEM_DATA_ROOT, cache_dir()]
        return [Path(root) / self.name for root in roots if root is not None]

    @staticmethod
    def present_in(directory: Path) -> dict[str, Path]:
        """Those of the four files that ``directory`` holds (raw before ``.gz``).

        Anything under a file's name counts, even a FIFO or a dangling link: reading it then fails
        loudly instead of the search silently moving on to another copy.
        """
        found = {}
        for role, stem in IDX_FILES.items():
            path = next((p for p in (directory / stem, directory / f"{stem}.gz") if os.path.lexists(p)), None)
            if path is not None:
                found[role] = path
        return found

    @classmethod
    def files_in(cls, directory: Path) -> dict[str, Path] | None:
        """The four files in ``directory``, or None if any is absent."""
        found = cls.present_in(directory)
        return found if len(found) == len(IDX_FILES) else None

    def locate(self, data_dir: str | os.PathLike | None) -> dict[str, Path] | None:
        for directory in self.search_dirs(data_dir):
            files = self.files_in(directory)
            if files is not None:
                return files
        return None

    def fetch(self) -> dict[str, Path]:
        """Download whichever of the four files the cache directory lacks.

        Offline, the error says which files to put where by hand: that is the only way to get
        MNIST onto a machine without internet.
        """
        target = cache_dir() / self.name
        missing = [role for role in IDX_FILES if role not in self.present_in(target)]
        for role in missing:
            try:
                downloader.download(f"{IDX_FILES[role]}.gz", self.md5[role], self.mirrors, target)
            except VaelabError as exc:
                raise VaelabError(
                    f"{exc}; to install {self.name} by hand, fetch {_gz_names(missing)} from "
                    f"{self.mirrors[0]} and copy them into {target}/ (or into DIR/{self.name}/ and "
                    "pass --data-dir DIR)"
                ) from exc
        files = self.files_in(target)
        assert files is not None, "every missing file was just downloaded"
        return files

    def find(self, data_dir: str | None, download: bool) -> dict[str, Path]:
        """The four files: from ``data_dir`` alone when given, else searched for, else downloaded."""
        files = self.locate(data_dir)
        if files is not None:
            return files
        if data_dir:
            directory = self.search_dirs(data_dir)[0]
            missing = [role for role in IDX_FILES if role not in self.present_in(directory)]
            raise VaelabError(
                f"{directory}: missing {_gz_names(missing)} (or the same without .gz); "
                f"expected all four {self.name} IDX files there, the only place searched when a "
                "data directory is given"
            )
        if not download:
            searched = ", ".join(str(d) for d in self.search_dirs(data_dir))
            raise VaelabError(
                f"{self.name}: IDX files not found in {searched}; allow downloading or put "
                f"{_gz_names(list(IDX_FILES))} in one of them"
            )
        return self.fetch()

    def load(
        self, data_dir: str | None, val_size: int | None, download: bool, seed: int
    ) -> Dataset:
        files = self.find(data_dir, download)
        train_x, train_y = read_idx_pair(files["train_images"], files["train_labels"])
        test_x, test_y = read_idx_pair(files["test_images"], files["test_labels"])
        if train_x.array.shape[1:] != test_x.array.shape[1:]:
            raise VaelabError(
                f"{files['test_images']}: images are {test_x.array.shape[1:]} but "
                f"{files['train_images']} holds {train_x.array.shape[1:]}; expected the same size"
            )
        for labels, role in ((train_y, "train_labels"), (test_y, "test_labels")):
            top = int(labels.array.max()) if labels.array.size else 0
            if top >= len(self.classes):
                raise VaelabError(f"{files[role]}: holds label {top}, expected class indices 0..{len(self.classes) - 1} "
                                  f"of {self.name}'s {len(self.classes)} classes")
        source = str(files["train_images"].parent)
        val_size = 5000 if val_size is None else val_size
        _check_val_size(source, val_size, len(train_x.array))
        x = _to_float(train_x.array, 255.0).unsqueeze(1)  # [N, 1, H, W]
        y = _labels(train_y.array)
        n_train = len(x) - val_size
        reads = (train_x, train_y, test_x, test_y)  # in the order of IDX_FILES
        return Dataset(
            name=self.name,
            train=Split(x[:n_train], y[:n_train]),
            val=Split(x[n_train:], y[n_train:]),
            test=Split(_to_float(test_x.array, 255.0).unsqueeze(1), _labels(test_y.array)),
            classes=self.classes,
            source=source,
            provenance=tuple(
                (str(files[role].resolve()), read.sha256) for role, read in zip(IDX_FILES, reads, strict=True)
            ),
        )

    def describe(self, data_dir: str | None) -> dict:
        files = self.locate(data_dir)
        n_train, n_test = self.sizes
        return {
            "name": self.name,
            "kind": "images, 28x28 gray, 10 classes",
            "found": files is not None,
            "location": self._location(files, data_dir),
            "shape": self.shape,
            "sizes": {"train": n_train - 5000, "val": 5000, "test": n_test},
        }

    def _location(self, files: dict[str, Path] | None, data_dir: str | None) -> str:
        """Where the files are, or where they would come from."""
        if files is not None:
            return str(files["train_images"].parent)
        if data_dir:
            return f"missing from {self.search_dirs(data_dir)[0]}"
        return f"download from {self.mirrors[0]} into {cache_dir() / self.name}"


# ---------------------------------------------------------------------------------------------
# scikit-learn digits


@dataclass(frozen=True)
class SklearnDigits:
    """UCI 8x8 digits from scikit-learn, with the fixed split described in the module docstring."""

    name: str = "digits"
    shape: tuple[int, ...] = (1, 8, 8)
    n_test: int = 360
    n_val: int = 180

    def load(
        self, data_dir: str | None, val_size: int | None, download: bool, seed: int
    ) -> Dataset:
        import sklearn
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = _to_float(bunch.images, 16.0).unsqueeze(1)  # [1797, 1, 8, 8]
        y = _labels(bunch.target)
        n_val = self.n_val if val_size is None else val_size
        _check_val_size(self.name, n_val, len(x) - self.n_test)
        perm = np.random.default_rng(0).permutation(len(x))
        test, val, train = np.split(perm, [self.n_test, self.n_test + n_val])
        return Dataset(
            name=self.name,
            train=_take(x, y, train),
            val=_take(x, y, val),
            test=_take(x, y, test),
            classes=tuple(str(d) for d in range(10)),
            source="scikit-learn",
            provenance=f"embedded: scikit-learn {sklearn.__version__} load_digits",
        )

    def describe(self, data_dir: str | None) -> dict:
        return {
            "name": self.name,
            "kind": "images, 8x8 gray (17 levels), 10 classes",
            "found": True,
            "location": "scikit-learn",
            "shape": self.shape,
            "sizes": {
                "train": 1797 - self.n_test - self.n_val,
                "val": self.n_val,
                "test": self.n_test,
            },
        }


# ---------------------------------------------------------------------------------------------
# Coloured shapes, generated


@dataclass(frozen=True)
class GeneratedShapes:
    """:func:`vaelab.data.shapes.make_shapes` with the fixed split described in the module docstring."""

    name: str = "shapes"
    n: int = 6000
    size: int = 32
    seed: int = 0
    n_test: int = 1000
    n_val: int = 500

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def load(self, data_dir: str | None, val_size: int | None, download: bool, seed: int) -> Dataset:
        data = shapes.make_shapes(self.n, self.size, self.seed)
        x = _to_float(data.images, 255.0)  # [N, 3, S, S]
        y = _labels(data.labels)
        c = torch.from_numpy(data.factors())  # [N, 7]
        n_val = self.n_val if val_size is None else val_size
        _check_val_size(self.name, n_val, self.n - self.n_test)
        n_train = self.n - self.n_test - n_val
        train, val, test = np.split(np.arange(self.n), [n_train, n_train + n_val])
        return Dataset(
            name=self.name,
            train=_take(x, y, train, c),
            val=_take(x, y, val, c),
            test=_take(x, y, test, c),
            classes=shapes.SHAPES,
            source="generated",
            covariate_names=shapes.FACTOR_NAMES,
            provenance=f"generated: vaelab.data.shapes.make_shapes({self.n}, size={self.size}, seed={self.seed})",
        )

    def describe(self, data_dir: str | None) -> dict:
        return {
            "name": self.name,
            "kind": f"images, {self.size}x{self.size} RGB, 3 shapes x 6 colours",
            "found": True,
            "location": "generated (vaelab.data.shapes)",
            "shape": self.shape,
            "sizes": {"train": self.n - self.n_test - self.n_val, "val": self.n_val, "test": self.n_test},
        }


MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

DATASETS: dict[str, IdxSource | SklearnDigits | GeneratedShapes] = {
    "mnist": IdxSource(
        name="mnist",
        md5={  # torchvision's values
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=MNIST_MIRRORS,
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        md5={
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=FASHION_MIRRORS,
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "digits": SklearnDigits(),
    "shapes": GeneratedShapes(),
}


# ---------------------------------------------------------------------------------------------
# User data

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# Per image. Pillow's own bomb guard starts at 89M pixels; a VAE never needs more than this.
MAX_IMAGE_PIXELS = 4096 * 4096
# The largest file a valid image within MAX_IMAGE_PIXELS can be: uncompressed 16-bit RGBA plus
# 1 MiB of metadata. Anything bigger is refused before it is read.
MAX_IMAGE_FILE_BYTES = 8 * MAX_IMAGE_PIXELS + (1 << 20)
# Labels (.npz ``y``) must lie below this: one stray 10**9 must not build a billion class names.
MAX_CLASSES = 10_000
# What Pillow raises for files it cannot decode (truncated, corrupt, unknown format).
_IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error)


def _list_dir(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted by name; a folder that cannot be listed is a user error."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise VaelabError(
            f"{folder}: cannot list folder ({exc.strerror or exc}); expected a readable folder of images"
        ) from exc


def _image_files(entries: list[Path]) -> list[Path]:
    """Entries named like images (an extension Pillow knows), hidden ones excluded.

    Not only regular files: a FIFO or device named like an image is refused when read, rather
    than silently left out of the dataset.
    """
    extensions = set(Image.registered_extensions())
    return [
        p
        for p in entries
        if not p.name.startswith(".") and p.suffix.lower() in extensions and not p.is_dir()
    ]


def _decode_image(path: Path) -> tuple[Image.Image, str]:
    """One image, decoded, and the sha256 of its file; bombs are refused before decoding pixels.

    Pillow turns its size warning into an error here, so an image between our limit and
    Pillow's hard one fails the same way as the rest.
    """
    data, sha256 = read_file_hashed(path, "an image file", MAX_IMAGE_FILE_BYTES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            _check_pixels(path, image.size)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise VaelabError(
                f"{path}: image too large ({one_line(exc)}); expected at most {MAX_IMAGE_PIXELS} pixels"
            ) from exc
        except _IMAGE_ERRORS as exc:
            raise VaelabError(
                f"{path}: cannot read image ({one_line(exc)}); expected an image file Pillow decodes"
            ) from exc
    return image, sha256


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise VaelabError(
            f"{path}: image is {width}x{height} = {width * height} pixels; expected at most "
            f"{MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS)"
        )


def _check_folder_budget(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Refuse, after the first image, a folder whose images together exceed the array limit."""
    width, height = size
    needed = count * width * height * 3  # uint8 RGB, the largest form before the float tensor
    if needed > MAX_ARRAY_BYTES:
        raise VaelabError(
            f"{folder}: {count} images of {width}x{height} need {gigabytes(needed)}; expected at "
            f"most {gigabytes(MAX_ARRAY_BYTES)} in all"
        )


def covariates_from_class_names(classes: tuple[str, ...]) -> tuple[torch.Tensor, tuple[str, ...]] | None:
    """Continuous covariates encoded in class-folder names, one row per class, or None.

    Two spellings are understood: a plain number (``0.5/``, ``30/``: one covariate named ``class``)
    and ``name=value`` pairs joined by commas (``angle=30,scale=1.5/``: the same names in every
    folder). Anything else means the folders are plain categories.
    """
    rows: list[dict[str, float]] = []
    for name in classes:
        parts = name.split(",") if "=" in name else [f"class={name}"]
        row = {}
        for part in parts:
            key, _, value = part.partition("=")
            try:
                row[key.strip()] = float(value)
            except ValueError:
                return None
        rows.append(row)
    names = tuple(rows[0])
    if any(tuple(row) != names for row in rows) or not all(names):
        return None
    return torch.tensor([[row[k] for k in names] for row in rows], dtype=torch.float32), names


def _folder_layout(folder: Path) -> tuple[list[Path], list[int], tuple[str, ...] | None]:
    """Image paths, their labels and the class names (None for a flat folder), before any is read."""
    entries = _list_dir(folder)
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    top_files = _image_files(entries)
    if subdirs and top_files:
        raise VaelabError(
            f"{folder}: mixes image files ({top_files[0].name}) with class sub-folders; "
            "use either a flat folder or one sub-folder per class"
        )
    if not subdirs:
        if not top_files:
            raise VaelabError(
                f"{folder}: no image files found (expected images or class sub-folders)"
            )
        return top_files, [], None
    paths, labels = [], []
    for label, subdir in enumerate(subdirs):
        files = _image_files(_list_dir(subdir))
        if not files:
            raise VaelabError(f"{subdir}: class folder holds no image files, expected at least one")
        paths += files
        labels += [label] * len(files)
    return paths, labels, tuple(d.name for d in subdirs)


def _read_images(folder: Path, paths: list[Path]) -> tuple[torch.Tensor, tuple[tuple[str, str], ...]]:
    """``[N, C, H, W]`` in [0, 1] and the provenance of every file; sizes checked as they arrive."""
    pixels, provenance, gray = [], [], True
    for path in paths:
        image, sha256 = _decode_image(path)
        if not pixels:
            first_size = image.size
            _check_folder_budget(folder, len(paths), first_size)
        elif image.size != first_size:
            raise VaelabError(
                f"{path}: image is {image.size[0]}x{image.size[1]} but {paths[0]} is "
                f"{first_size[0]}x{first_size[1]}; all images must have the same size"
            )
        is_gray = image.mode in GRAY_MODES
        gray = gray and is_gray
        pixels.append(np.asarray(image.convert("L" if is_gray else "RGB")))  # [H, W] or [H, W, 3]
        provenance.append((str(path.resolve()), sha256))
    if gray:
        return _to_float(np.stack(pixels), 255.0).unsqueeze(1), tuple(provenance)
    rgb = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in pixels]  # as Pillow's L -> RGB
    return _to_float(np.stack(rgb), 255.0).permute(0, 3, 1, 2).contiguous(), tuple(provenance)


def _load_folder(folder: Path) -> _UserData:
    """Images of ``folder`` (flat, or one sub-folder per class) as ``[N, C, H, W]`` in [0, 1]."""
    paths, labels, classes = _folder_layout(folder)
    x, provenance = _read_images(folder, paths)
    if classes is None:
        return _UserData(x, provenance=provenance)
    y = _labels(np.array(labels))
    numeric = covariates_from_class_names(classes)
    if numeric is None:
        return _UserData(x, y, classes, provenance=provenance)
    values, names = numeric
    return _UserData(x, y, classes, values[y], names, provenance)


NPZ_KEYS = ("x", "y", "c", "c_names")
# What zipfile and numpy's .npy header parser raise for a broken archive (bad zip, CRC, header).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError, RuntimeError)
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npz_members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member, checked against the names vaelab knows and the size limit."""
    infos = archive.infolist()
    members = {info.filename.removesuffix(".npy"): info for info in infos}
    found = sorted(info.filename for info in infos)
    if "x" not in members or not set(members) <= set(NPZ_KEYS) or not all(f.endswith(".npy") for f in found):
        raise VaelabError(
            f"{path}: expected arrays 'x' (required), 'y', 'c' and 'c_names' (optional), found {found}"
        )
    declared = sum(info.file_size for info in members.values())
    if declared > MAX_ARRAY_BYTES:
        raise VaelabError(
            f"{path}: arrays need {gigabytes(declared)}; expected at most {gigabytes(MAX_ARRAY_BYTES)}"
        )
    return members


def _npz_array(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's array: its .npy header first, then exactly the bytes it promises.

    numpy's own reader allocates whatever shape a header claims and unpickles object arrays
    when asked; this one checks the claim against the member's size and never unpickles.
    """
    key = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADER_READERS:
            raise VaelabError(f"{path}: array {key!r} has .npy format {version}, expected 1.0 or 2.0")
        shape, fortran_order, dtype = _NPY_HEADER_READERS[version](member)
        if dtype.hasobject:
            raise VaelabError(
                f"{path}: array {key!r} holds Python objects (dtype {dtype}); expected numbers "
                "(or strings for c_names): vaelab never unpickles data"
            )
        count = math.prod(shape)
        promised = count * dtype.itemsize
        if min(shape, default=0) < 0 or promised > info.file_size:
            raise VaelabError(
                f"{path}: array {key!r} header promises shape {shape} of {dtype} but its member "
                f"holds only {info.file_size} bytes; expected a complete .npz file"
            )
        buffer = bytearray(promised + 1)
        found = read_into(member, memoryview(buffer))
    if found != promised:
        raise VaelabError(
            f"{path}: array {key!r} header promises {promised} bytes of data, found "
            f"{found if found < promised else 'more'}; expected a complete .npz file"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of an ``.npz`` file and the file's sha256, read from one pass over its bytes."""
    data, sha256 = read_file_hashed(path, "an .npz file", MAX_ARRAY_BYTES + (1 << 20))  # + headers
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _npz_members(path, archive)
            return {key: _npz_array(path, archive, info) for key, info in members.items()}, sha256
    except _ZIP_ERRORS as exc:
        raise VaelabError(
            f"{path}: cannot read .npz file ({one_line(exc)}); expected a zip of .npy arrays "
            "as numpy.savez writes"
        ) from exc


def _npz_x(path: Path, x_np: np.ndarray) -> torch.Tensor:
    """``x`` as float32 ``[N, D]`` or ``[N, C, H, W]``, validated."""
    if x_np.ndim not in (2, 3, 4) or 0 in x_np.shape:
        raise VaelabError(
            f"{path}: x must be [N, D], [N, H, W] or [N, C, H, W] with no empty axis, "
            f"got shape {x_np.shape}"
        )
    if x_np.ndim == 4 and x_np.shape[1] not in (1, 3):
        raise VaelabError(
            f"{path}: x of shape {x_np.shape} has {x_np.shape[1]} channels; "
            "expected channels-first [N, C, H, W] with C 1 or 3"
        )
    if x_np.dtype == np.uint8:
        x = _to_float(x_np, 255.0)
    elif x_np.dtype == np.bool_ or np.issubdtype(x_np.dtype, np.floating):
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported just below
            x = _to_float(x_np.astype(np.float32), 1.0)
    else:
        raise VaelabError(f"{path}: x has dtype {x_np.dtype}, expected uint8 (0..255) or float")
    if not torch.isfinite(x).all():
        raise VaelabError(f"{path}: x contains NaN or infinite values (as float32), expected finite numbers")
    if x.ndim > 2 and (x.min() < 0 or x.max() > 1):
        raise VaelabError(
            f"{path}: float images must lie in [0, 1], "
            f"found [{x.min().item():g}, {x.max().item():g}]"
        )
    return x.unsqueeze(1) if x.ndim == 3 else x  # [N, H, W] -> [N, 1, H, W]


def _npz_labels(path: Path, y_np: np.ndarray, n: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """``y`` as int64 and one class name per label value; the largest label is checked first."""
    if y_np.ndim != 1 or len(y_np) != n or not np.issubdtype(y_np.dtype, np.integer):
        raise VaelabError(
            f"{path}: y must be {n} integer labels [N] (0..K-1, -1: missing), "
            f"got dtype {y_np.dtype} shape {y_np.shape}"
        )
    low, high = int(y_np.min()), int(y_np.max())
    if low < -1:
        raise VaelabError(
            f"{path}: y holds negative label {low}, expected class indices 0..K-1 (-1: missing)"
        )
    if high >= MAX_CLASSES:
        raise VaelabError(
            f"{path}: y holds label {high}, expected class indices below {MAX_CLASSES} (MAX_CLASSES)"
        )
    if high < 0:
        raise VaelabError(
            f"{path}: y marks every example missing (-1); expected at least one label, or no y"
        )
    return _labels(y_np), tuple(str(k) for k in range(high + 1))


def _npz_covariates(
    path: Path, arrays: dict[str, np.ndarray], n: int
) -> tuple[torch.Tensor | None, tuple[str, ...] | None]:
    """``c`` ([N] or [N, K] floats, NaN = missing) and its optional ``c_names`` ([K] strings)."""
    if "c" not in arrays:
        if "c_names" in arrays:
            raise VaelabError(f"{path}: c_names given without c, expected both or neither")
        return None, None
    c_np = arrays["c"]
    if c_np.ndim == 1:
        c_np = c_np[:, None]
    numeric = np.issubdtype(c_np.dtype, np.floating) or np.issubdtype(c_np.dtype, np.integer)
    if c_np.ndim != 2 or len(c_np) != n or c_np.shape[1] == 0 or not numeric:
        raise VaelabError(
            f"{path}: c must be {n} rows of numbers [N] or [N, K] with K >= 1, "
            f"got dtype {c_np.dtype} shape {arrays['c'].shape}"
        )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported just below
        c = torch.from_numpy(c_np.astype(np.float32))
    if torch.isinf(c).any():
        raise VaelabError(f"{path}: c contains infinite values (as float32); expected NaN for a missing covariate")
    if "c_names" not in arrays:
        return c, tuple(f"c{k}" for k in range(c.shape[1]))
    names = tuple(str(v) for v in arrays["c_names"].reshape(-1))
    if len(names) != c.shape[1] or len(set(names)) != len(names) or not all(names):
        raise VaelabError(
            f"{path}: c_names must be {c.shape[1]} distinct non-empty names, got {len(names)}: "
            f"{list(names)[:10]}"
        )
    return c, names


def _load_npz(path: Path) -> _UserData:
    """``x`` (and ``y``, ``c``) from an ``.npz`` file, validated; see the module docstring for shapes."""
    arrays, sha256 = _read_npz(path)
    x = _npz_x(path, arrays["x"])
    c, covariate_names = _npz_covariates(path, arrays, len(x))
    provenance = ((str(path.resolve()), sha256),)
    if "y" not in arrays:
        return _UserData(x, c=c, covariate_names=covariate_names, provenance=provenance)
    y, classes = _npz_labels(path, arrays["y"], len(x))
    return _UserData(x, y, classes, c, covariate_names, provenance)


def _load_user(path: Path, name: str, val_size: int | None, seed: int) -> Dataset:
    if path.is_dir():
        data = _load_folder(path)
    elif path.suffix.lower() == ".npz":
        data = _load_npz(path)
    else:
        raise VaelabError(f"{path}: expected a folder of images or an .npz file")
    x, y, c = data.x, data.y, data.c
    n = len(x)
    if n < 3:
        raise VaelabError(
            f"{path}: {n} examples, need at least 3 (one each for train, val and test)"
        )
    n_test = max(1, n // 10)
    n_val = max(1, n // 10) if val_size is None else val_size
    _check_val_size(str(path), n_val, n - n_test)
    perm = np.random.default_rng(seed).permutation(n)
    test, val, train = np.split(perm, [n_test, n_test + n_val])
    return Dataset(
        name=name,
        train=_take(x, y, train, c),
        val=_take(x, y, val, c),
        test=_take(x, y, test, c),
        classes=data.classes,
        source=str(path.resolve()),
        covariate_names=data.covariate_names,
        provenance=data.provenance,
    )


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only mean a file or folder (so a missing one is "not found", not "unknown")."""
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return any(sep in name for sep in separators) or name.startswith((".", "~")) or name.lower().endswith(".npz")


# ---------------------------------------------------------------------------------------------
# Public API


def load_dataset(
    name: str,
    data_dir: str | None = None,
    val_size: int | None = None,
    download: bool = True,
    seed: int = 0,
) -> Dataset:
    """Load a named dataset or user data at path ``name``, split into train/val/test.

    Registered names win over same-named paths (write ``./digits`` for a folder called digits).
    ``val_size`` overrides the validation size; ``seed`` only affects how user data is split.
    Splits and search order are described in the module docstring.
    """
    if name in DATASETS:
        return DATASETS[name].load(data_dir, val_size, download, seed)
    path = Path(name).expanduser()
    if os.path.exists(path):
        return _load_user(path, name, val_size, seed)
    if _looks_like_path(name):
        raise VaelabError(
            f"file not found: {os.path.expanduser(name)} (expected a folder of images or an .npz file)"
        )
    known = ", ".join(DATASETS)
    raise VaelabError(
        f"unknown dataset {name!r}: expected one of {known}, or the path of a folder of images "
        "or an .npz file (there is no such file)"
    )


def describe_datasets(data_dir: str | None = None) -> list[dict]:
    """One dict per registered dataset for ``vaelab datasets``, without loading any data.

    Keys: name, kind, found (bool), location (directory, or where it would be downloaded from and
    to), shape (per example) and sizes (train/val/test with the default validation size).
    """
    return [spec.describe(data_dir) for spec in DATASETS.values()]


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One Bernoulli draw per value, with the value as probability (Salakhutdinov & Murray 2008).

    The trainer calls this each epoch for dynamic binarisation, so the model never sees the same
    binary image twice and does not overfit one draw.
    """
    return torch.bernoulli(x, generator=generator)


BINARIZE_MODES = ("none", "static", "dynamic")


def _split_generator(seed: int, index: int) -> torch.Generator:
    """An independent generator per split: val/test draws then match in static and dynamic mode."""
    state = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def binarize_dataset(ds: Dataset, mode: str, seed: int) -> Dataset:
    """Binarise ``ds`` for a Bernoulli likelihood.

    ``none`` returns ``ds`` unchanged; ``static`` draws every split once with ``seed``;
    ``dynamic`` leaves train as intensities (the trainer redraws it each epoch with
    :func:`binarize`) and draws val and test once with ``seed``. Val and test come out identical
    in static and dynamic mode, so their test scores stay comparable.
    """
    if mode not in BINARIZE_MODES:
        raise VaelabError(
            f"unknown binarize mode {mode!r}: expected one of {', '.join(BINARIZE_MODES)}"
        )
    if mode == "none":
        return ds
    for split_name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        if len(split) and (split.x.min() < 0 or split.x.max() > 1):
            raise VaelabError(
                f"{ds.name}: binarize mode {mode!r} needs values in [0, 1], {split_name} split has "
                f"[{split.x.min().item():g}, {split.x.max().item():g}]"
            )

    def draw(split: Split, index: int) -> Split:
        return replace(split, x=binarize(split.x, _split_generator(seed, index)))

    train = draw(ds.train, 0) if mode == "static" else ds.train
    return replace(ds, train=train, val=draw(ds.val, 1), test=draw(ds.test, 2))
