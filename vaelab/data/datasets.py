"""Datasets as the trainer sees them: fixed train/val/test splits of float32 tensors.

Images are ``[N, C, H, W]`` float32 in [0, 1]; tabular data ``[N, D]`` float32; labels ``[N]``
int64 or ``None``. Every split is fixed and documented, so that two runs (or two papers) that name
the same dataset evaluate on the same examples.

Named datasets (:data:`DATASETS`):

* ``mnist``, ``fashion-mnist`` - four IDX files, ``.gz`` or uncompressed. Searched in this order,
  the first directory holding all four files wins:

  1. ``<data_dir>/<name>/`` (the ``data_dir`` argument),
  2. ``$VAELAB_DATA/<name>/``,
  3. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` package),
  4. ``$XDG_CACHE_HOME/vaelab/<name>/`` or ``~/.cache/vaelab/<name>/``.

  ``data_dir`` and ``$VAELAB_DATA`` are *roots* holding one sub-directory per dataset, never the
  files themselves: MNIST and Fashion-MNIST use identical file names, so files lying directly in a
  root could be either. If nothing is found and ``download`` is true, the missing files are
  downloaded into the cache directory (4.). Test = the official 10k ``t10k`` files in file order;
  validation = the last ``val_size`` (default 5000) examples of the training file; train = the
  rest, in file order (55000 / 5000 / 10000).
* ``digits`` - scikit-learn's 8x8 UCI digits (1797 images, values 0..16 scaled by 1/16). It has no
  official split, so one is fixed with ``numpy.random.default_rng(0).permutation(1797)``: the first
  360 indices are test, the next 180 validation, the remaining 1257 train. The ``seed`` argument
  does not change it.

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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaelab.data import download as downloader
from vaelab.errors import VaelabError
from vaelab.data.idx import read_idx_pair

SYSTEM_DATA_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
DATA_ENV = "VAELAB_DATA"


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # [N, C, H, W] in [0, 1] (images) or [N, D] (tabular), float32
    y: torch.Tensor | None  # [N] int64 class indices (-1: label hidden), or None when unlabelled
    c: torch.Tensor | None = None  # [N, K] float32 continuous covariates (NaN: missing), or None

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Dataset:
    name: str  # "fashion-mnist", "digits", or the user's path
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...] | None  # class names, index = label
    source: str  # where it was found (directory/file), or "scikit-learn"
    covariate_names: tuple[str, ...] | None = None  # names of the columns of ``Split.c``

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
        """Candidate directories in search order (see the module docstring)."""
        roots = [data_dir, os.environ.get(DATA_ENV) or None, SYSTEM_DATA_ROOT, cache_dir()]
        return [Path(root) / self.name for root in roots if root is not None]

    @staticmethod
    def files_in(directory: Path) -> dict[str, Path] | None:
        """The four files in ``directory`` (raw before ``.gz``), or None if any is absent."""
        found = {}
        for role, stem in IDX_FILES.items():
            path = next(
                (p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None
            )
            if path is None:
                return None
            found[role] = path
        return found

    def locate(self, data_dir: str | os.PathLike | None) -> dict[str, Path] | None:
        for directory in self.search_dirs(data_dir):
            files = self.files_in(directory)
            if files is not None:
                return files
        return None

    def fetch(self) -> dict[str, Path]:
        """Download whichever of the four files the cache directory lacks."""
        target = cache_dir() / self.name
        for role, stem in IDX_FILES.items():
            if not ((target / stem).is_file() or (target / f"{stem}.gz").is_file()):
                downloader.download(f"{stem}.gz", self.md5[role], self.mirrors, target)
        files = self.files_in(target)
        assert files is not None, "every missing file was just downloaded"
        return files

    def load(
        self, data_dir: str | None, val_size: int | None, download: bool, seed: int
    ) -> Dataset:
        files = self.locate(data_dir)
        if files is None:
            if not download:
                searched = ", ".join(str(d) for d in self.search_dirs(data_dir))
                raise VaelabError(
                    f"{self.name}: IDX files not found in {searched}; allow downloading or put "
                    f"{IDX_FILES['train_images']}.gz and the other three files in one of them"
                )
            files = self.fetch()
        train_x, train_y = read_idx_pair(files["train_images"], files["train_labels"])
        test_x, test_y = read_idx_pair(files["test_images"], files["test_labels"])
        if train_x.shape[1:] != test_x.shape[1:]:
            raise VaelabError(
                f"{files['test_images']}: images are {test_x.shape[1:]} but "
                f"{files['train_images']} holds {train_x.shape[1:]}"
            )
        source = str(files["train_images"].parent)
        val_size = 5000 if val_size is None else val_size
        _check_val_size(source, val_size, len(train_x))
        x = _to_float(train_x, 255.0).unsqueeze(1)  # [N, 1, H, W]
        y = _labels(train_y)
        n_train = len(x) - val_size
        return Dataset(
            name=self.name,
            train=Split(x[:n_train], y[:n_train]),
            val=Split(x[n_train:], y[n_train:]),
            test=Split(_to_float(test_x, 255.0).unsqueeze(1), _labels(test_y)),
            classes=self.classes,
            source=source,
        )

    def describe(self, data_dir: str | None) -> dict:
        files = self.locate(data_dir)
        n_train, n_test = self.sizes
        return {
            "name": self.name,
            "kind": "images, 28x28 gray, 10 classes",
            "found": files is not None,
            "location": (
                str(files["train_images"].parent)
                if files is not None
                else f"download from {self.mirrors[0]} into {cache_dir() / self.name}"
            ),
            "shape": self.shape,
            "sizes": {"train": n_train - 5000, "val": 5000, "test": n_test},
        }


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


MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

DATASETS: dict[str, IdxSource | SklearnDigits] = {
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
}


# ---------------------------------------------------------------------------------------------
# User data

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _image_files(folder: Path) -> list[Path]:
    extensions = set(Image.registered_extensions())
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VaelabError(f"{path}: cannot read image ({exc})") from exc
    return image


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


def _load_folder(folder: Path) -> _UserData:
    """Images of ``folder`` (flat, or one sub-folder per class) as ``[N, C, H, W]`` in [0, 1]."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    top_files = _image_files(folder)
    if subdirs and top_files:
        raise VaelabError(
            f"{folder}: mixes image files ({top_files[0].name}) with class sub-folders; "
            "use either a flat folder or one sub-folder per class"
        )
    if subdirs:
        classes: tuple[str, ...] | None = tuple(d.name for d in subdirs)
        paths, labels = [], []
        for label, subdir in enumerate(subdirs):
            files = _image_files(subdir)
            if not files:
                raise VaelabError(f"{subdir}: class folder holds no image files")
            paths += files
            labels += [label] * len(files)
    else:
        classes, paths, labels = None, top_files, []
    if not paths:
        raise VaelabError(f"{folder}: no image files found (expected images or class sub-folders)")

    images = [_open_image(p) for p in paths]
    first_size = images[0].size
    for path, image in zip(paths, images, strict=True):
        if image.size != first_size:
            raise VaelabError(
                f"{path}: image is {image.size[0]}x{image.size[1]} but {paths[0]} is "
                f"{first_size[0]}x{first_size[1]}; all images must have the same size"
            )
    gray = all(image.mode in GRAY_MODES for image in images)
    mode = "L" if gray else "RGB"
    pixels = np.stack([np.asarray(image.convert(mode)) for image in images])  # [N, H, W(, 3)]
    x = _to_float(pixels, 255.0)
    x = x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2).contiguous()
    if classes is None:
        return _UserData(x)
    y = _labels(np.array(labels))
    numeric = covariates_from_class_names(classes)
    if numeric is None:
        return _UserData(x, y, classes)
    values, names = numeric
    return _UserData(x, y, classes, values[y], names)


def _npz_covariates(path: Path, arrays: dict[str, np.ndarray], n: int) -> tuple[torch.Tensor | None, tuple[str, ...] | None]:
    """``c`` ([N] or [N, K] floats, NaN = missing) and its optional ``c_names`` ([K] strings)."""
    if "c" not in arrays:
        if "c_names" in arrays:
            raise VaelabError(f"{path}: c_names given without c")
        return None, None
    c_np = arrays["c"]
    if c_np.ndim == 1:
        c_np = c_np[:, None]
    if c_np.ndim != 2 or len(c_np) != n or not (np.issubdtype(c_np.dtype, np.floating) or np.issubdtype(c_np.dtype, np.integer)):
        raise VaelabError(f"{path}: c must be {n} rows of numbers [N] or [N, K], got dtype {c_np.dtype} shape {arrays['c'].shape}")
    c = torch.from_numpy(c_np.astype(np.float32))
    if torch.isinf(c).any():
        raise VaelabError(f"{path}: c contains infinite values (use NaN for a missing covariate)")
    if "c_names" in arrays:
        names = tuple(str(v) for v in np.asarray(arrays["c_names"]).reshape(-1))
        if len(names) != c.shape[1] or len(set(names)) != len(names) or not all(names):
            raise VaelabError(f"{path}: c_names must be {c.shape[1]} distinct non-empty names, got {list(names)}")
    else:
        names = tuple(f"c{k}" for k in range(c.shape[1]))
    return c, names


def _load_npz(path: Path) -> _UserData:
    """``x`` (and ``y``, ``c``) from an ``.npz`` file, validated; see the module docstring for shapes."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise VaelabError(f"{path}: cannot read .npz file ({exc})") from exc
    keys = sorted(arrays)
    if "x" not in arrays or not set(keys) <= {"x", "y", "c", "c_names"}:
        raise VaelabError(
            f"{path}: expected arrays 'x' (required), 'y', 'c' and 'c_names' (optional), found {keys}"
        )
    x_np = arrays["x"]
    if x_np.ndim not in (2, 3, 4) or len(x_np) == 0:
        raise VaelabError(
            f"{path}: x must be [N, D], [N, H, W] or [N, C, H, W] with N > 0, "
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
        x = _to_float(x_np.astype(np.float32), 1.0)
    else:
        raise VaelabError(f"{path}: x has dtype {x_np.dtype}, expected uint8 (0..255) or float")
    if not torch.isfinite(x).all():
        raise VaelabError(f"{path}: x contains NaN or infinite values")
    if x.ndim > 2 and (x.min() < 0 or x.max() > 1):
        raise VaelabError(
            f"{path}: float images must lie in [0, 1], "
            f"found [{x.min().item():g}, {x.max().item():g}]"
        )
    if x.ndim == 3:
        x = x.unsqueeze(1)  # [N, 1, H, W]

    c, covariate_names = _npz_covariates(path, arrays, len(x))
    if "y" not in arrays:
        return _UserData(x, c=c, covariate_names=covariate_names)
    y_np = arrays["y"]
    if y_np.ndim != 1 or len(y_np) != len(x) or not np.issubdtype(y_np.dtype, np.integer):
        raise VaelabError(
            f"{path}: y must be {len(x)} integer labels [N], "
            f"got dtype {y_np.dtype} shape {y_np.shape}"
        )
    if y_np.min() < -1:
        raise VaelabError(
            f"{path}: y holds negative label {y_np.min()}, expected class indices 0..K-1 (-1: missing)"
        )
    classes = tuple(str(k) for k in range(int(y_np.max()) + 1))
    return _UserData(x, _labels(y_np), classes, c, covariate_names)


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
    )


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
    if path.exists():
        return _load_user(path, name, val_size, seed)
    known = ", ".join(DATASETS)
    raise VaelabError(
        f"unknown dataset {name!r}: expected one of {known}, a folder of images or an .npz file"
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
