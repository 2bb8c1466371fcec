"""Small real classification data sets as tensors: MNIST-1D (generated locally) and sklearn digits.

The lottery-ticket experiments need data on which network width visibly matters but which trains
in seconds on a CPU. Two sets qualify:

``mnist1d``
    Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (2020; ICML 2024): 10 classes of
    1-D signals of length 40, made by randomly padding, shearing, translating and noising ten
    templates. It is generated here with ``mnist1d.data.make_dataset`` and never downloaded; the
    package's default arguments give 5000 samples split 4000 train / 1000 test. Published test
    accuracies separate model classes well: logistic regression ~32 %, dense MLP ~65-68 %, CNN
    ~92-94 %.
``digits``
    ``sklearn.datasets.load_digits``: 1797 8x8 handwritten digits (64 features, values 0..16),
    split 80/20 stratified by class and standardized per feature with the mean and standard
    deviation of the final training split (after the validation samples are taken out).

Both carry a validation split carved out of the training split by a seeded permutation. MNIST-1D
generation takes seconds, so its arrays are cached in process and on disk (``.npz`` under
``$ESCAPELAB_CACHE``, default ``~/.cache/escapelab``; skipped silently when not writable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import random
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from escapelab.config import SpecError

DATASETS: tuple[str, ...] = ("mnist1d", "digits")

CACHE_ENV = "ESCAPELAB_CACHE"
_CACHE_FORMAT = 1  # bump when the content or layout of the cache files changes
_MNIST1D_DEFAULT_SAMPLES = 5000
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_MIN_SAMPLES = 50  # 20 % of it is the 10 test samples a stratified split needs
_MAX_SEED = 2**32 - 1  # numpy's and sklearn's seeds are 32-bit


@dataclass(frozen=True)
class SupervisedData:
    """Train/validation/test splits of a supervised problem: ``x_*`` float32 (N, *input_shape).

    ``task = "classification"``: ``y_*`` are int64 labels (N,) in 0..n_classes-1, and training
    minimises the cross-entropy. ``task = "regression"`` (the teacher-student problems): ``y_*``
    are float32 targets (N, k), ``n_classes`` is 0, and training minimises half the mean
    squared error.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    name: str
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression"] = "classification"
    n_classes: int = 0

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {self.task!r}")
        if self.regression != (self.n_classes == 0):
            raise ValueError(
                f"n_classes must be >= 1 for classification and 0 for regression, "
                f"got {self.n_classes} for {self.task}"
            )
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            y_ok = y.shape[:1] == x.shape[:1] and y.ndim == 1 + self.regression
            if tuple(x.shape[1:]) != self.input_shape or not y_ok:
                expected = "(N, k)" if self.regression else "(N,)"
                raise ValueError(
                    f"x_{split}/y_{split}: expected shapes (N, *{self.input_shape}) and "
                    f"{expected}, got {tuple(x.shape)} and {tuple(y.shape)}"
                )

    @property
    def regression(self) -> bool:
        """True for a regression set."""
        return self.task == "regression"

    @property
    def n_outputs(self) -> int:
        """Outputs a model needs: the classes, or the target's dimension."""
        return int(self.y_train.shape[1]) if self.regression else self.n_classes

    def to(self, device: torch.device | str) -> SupervisedData:
        """A copy whose six tensors live on ``device`` (the metadata is shared)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {
            "train": int(self.y_train.shape[0]),
            "val": int(self.y_val.shape[0]),
            "test": int(self.y_test.shape[0]),
        }


def load_dataset(
    name: str, seed: int = 0, val_fraction: float = 0.1, n_samples: int | None = None
) -> SupervisedData:
    """Load data set ``name`` (one of :data:`DATASETS`) with its seeded splits.

    ``seed`` picks the MNIST-1D variant (its generator seed) or the digits train/test split, and
    in both cases the validation permutation. ``val_fraction`` of the training split (rounded) goes
    to validation. ``n_samples`` is the total before the train/test split: for MNIST-1D a multiple
    of 10 (default 5000), for digits at most 1797 (default all; fewer draws a stratified subset).
    Raises :class:`~escapelab.config.SpecError` (a ``ValueError``) naming the bad argument.
    """
    if name not in DATASETS:
        raise SpecError("name", f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise SpecError("seed", f"expected an integer in [0, 2**32 - 1], got {seed!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise SpecError("val_fraction", f"expected a number in [0, 1), got {val_fraction!r}")
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int)):
        raise SpecError("n_samples", f"expected an integer or None, got {n_samples!r}")

    if name == "mnist1d":
        x_train, y_train, x_test, y_test = _mnist1d_splits(seed, n_samples)
    else:
        x_train, y_train, x_test, y_test = _digits_splits(seed, n_samples)

    n_train = x_train.shape[0]
    n_val = round(val_fraction * n_train)
    if n_val >= n_train:
        raise SpecError(
            "val_fraction",
            f"{val_fraction} of {n_train} training samples leaves none for training; lower it",
        )
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=generator)
    val_idx = perm[:n_val].sort().values
    train_idx = perm[n_val:].sort().values  # sorted: val_fraction=0 keeps the original order

    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_tr, y_tr, x_va, y_va = xt[train_idx], yt[train_idx], xt[val_idx], yt[val_idx]
    x_te, y_te = torch.from_numpy(x_test), torch.from_numpy(y_test)
    if name == "digits":
        # Statistics of the final training split only, so nothing of val or test leaks into it.
        mean = x_tr.double().mean(0)
        std = x_tr.double().std(0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        x_tr, x_va, x_te = (((x.double() - mean) / std).float() for x in (x_tr, x_va, x_te))

    return SupervisedData(
        x_train=x_tr.float().contiguous(),
        y_train=y_tr.long().contiguous(),
        x_val=x_va.float().contiguous(),
        y_val=y_va.long().contiguous(),
        x_test=x_te.float().contiguous(),
        y_test=y_te.long().contiguous(),
        name=name,
        input_shape=(int(x_tr.shape[1]),),
        n_classes=10,
    )


def clear_cache() -> None:
    """Forget the in-process cache of generated arrays (the disk cache stays)."""
    _mnist1d_arrays.cache_clear()
    _digits_arrays.cache_clear()


def cache_dir() -> Path:
    """The on-disk cache directory: ``$ESCAPELAB_CACHE`` if set and non-empty, else ~/.cache."""
    configured = os.environ.get(CACHE_ENV, "")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "escapelab"


# --------------------------------------------------------------------------------------- MNIST-1D

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _mnist1d_splits(seed: int, n_samples: int | None) -> _Arrays:
    """Fresh copies of (x_train, y_train, x_test, y_test) for one MNIST-1D variant."""
    n = _MNIST1D_DEFAULT_SAMPLES if n_samples is None else n_samples
    if n < 10 or n % 10:
        raise SpecError(
            "n_samples", f"MNIST-1D needs a positive multiple of 10 (one share per class), got {n}"
        )
    x_tr, y_tr, x_te, y_te = _mnist1d_arrays(seed, n)
    return x_tr.copy(), y_tr.copy(), x_te.copy(), y_te.copy()


def _mnist1d_args(seed: int, n_samples: int) -> object:
    """The package's default generator arguments with our seed and sample count."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = n_samples
    return args


def _mnist1d_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:  # pragma: no cover - installed as a dependency
        return "unknown"


def _mnist1d_cache_path(seed: int, n_samples: int) -> Path:
    """Cache file named by every input of the data: version, seed, count and all other args."""
    args = {k: v for k, v in vars(_mnist1d_args(seed, n_samples)).items() if k != "url"}
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    version = _mnist1d_version().replace(os.sep, "_")
    name = f"mnist1d-v{version}-seed{seed}-n{n_samples}-{digest}-f{_CACHE_FORMAT}.npz"
    return cache_dir() / name


_KEYS = ("x_train", "y_train", "x_test", "y_test")


@functools.lru_cache(maxsize=16)
def _mnist1d_arrays(seed: int, n_samples: int) -> _Arrays:
    """Read-only (x_train f32, y_train i64, x_test f32, y_test i64): disk cache or generated."""
    path = _mnist1d_cache_path(seed, n_samples)
    arrays = _read_npz(path)
    if arrays is None:
        arrays = _generate_mnist1d(seed, n_samples)
        _write_npz(path, arrays)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _generate_mnist1d(seed: int, n_samples: int) -> _Arrays:
    """Run the package's generator, leaving numpy's and Python's global RNG states untouched."""
    from mnist1d.data import make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        ds = make_dataset(_mnist1d_args(seed, n_samples))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (
        np.ascontiguousarray(ds["x"], dtype=np.float32),
        np.ascontiguousarray(ds["y"], dtype=np.int64),
        np.ascontiguousarray(ds["x_test"], dtype=np.float32),
        np.ascontiguousarray(ds["y_test"], dtype=np.int64),
    )


def _read_npz(path: Path) -> _Arrays | None:
    """The cached arrays, or None when the file is missing, unreadable or malformed."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x_tr, y_tr, x_te, y_te = (np.array(f[k]) for k in _KEYS)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    ok = (
        x_tr.dtype == np.float32
        and x_te.dtype == np.float32
        and y_tr.dtype == np.int64
        and y_te.dtype == np.int64
        and x_tr.ndim == x_te.ndim == 2
        and x_tr.shape[1] == x_te.shape[1]
        and y_tr.shape == (x_tr.shape[0],)
        and y_te.shape == (x_te.shape[0],)
    )
    return (x_tr, y_tr, x_te, y_te) if ok else None


def _write_npz(path: Path, arrays: _Arrays) -> None:
    """Write atomically (temporary file, then rename); give up quietly if the dir is unwritable."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **dict(zip(_KEYS, arrays, strict=True)))
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# ----------------------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits, read-only: x float64 (1797, 64) in 0..16, y int64 (1797,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.ascontiguousarray(bunch.data, dtype=np.float64)
    y = np.ascontiguousarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _digits_splits(seed: int, n_samples: int | None) -> _Arrays:
    """Stratified seeded 80/20 split of the (optionally subsampled) raw digits, unstandardized."""
    from sklearn.model_selection import train_test_split

    x, y = _digits_arrays()
    total = x.shape[0]
    if n_samples is not None and n_samples != total:
        # Stratification needs every class in each part: >= 10 test samples, >= 10 left out.
        if not _DIGITS_MIN_SAMPLES <= n_samples <= total - 10:
            raise SpecError(
                "n_samples",
                f"digits has {total} samples; expected None, {total} or "
                f"{_DIGITS_MIN_SAMPLES}..{total - 10}, got {n_samples}",
            )
        x, _, y, _ = train_test_split(x, y, train_size=n_samples, stratify=y, random_state=seed)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=_DIGITS_TEST_FRACTION, stratify=y, random_state=seed
    )
    return (
        np.ascontiguousarray(x_tr, dtype=np.float32),
        np.ascontiguousarray(y_tr, dtype=np.int64),
        np.ascontiguousarray(x_te, dtype=np.float32),
        np.ascontiguousarray(y_te, dtype=np.int64),
    )
