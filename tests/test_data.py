"""Tests of the classification data sets: sizes, seeding, splits, caching and a published oracle."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from escapelab.config import SpecError
from escapelab.data import DATASETS, SupervisedData, cache_dir, clear_cache, load_dataset
from escapelab.data import datasets as cls

TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the disk cache at a temporary directory so no test writes to the home directory."""
    path = tmp_path_factory.mktemp("escapelab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESCAPELAB_CACHE", str(path))
        yield path


@pytest.fixture
def one_blas_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread for sklearn: on a busy 2-core machine spin-waiting costs 50x."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def mnist() -> SupervisedData:
    """The default MNIST-1D variant (seed 0, 5000 samples, 10 % validation): generated once."""
    return load_dataset("mnist1d")


def _assert_same(a: SupervisedData, b: SupervisedData) -> None:
    for key in TENSORS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.numpy()}


def test_datasets_constant() -> None:
    assert DATASETS == ("mnist1d", "digits")


def test_mnist1d_default_sizes_dtypes_and_balance(mnist: SupervisedData) -> None:
    assert mnist.name == "mnist1d"
    assert mnist.n_classes == 10
    assert mnist.input_shape == (40,)
    assert mnist.sizes == {"train": 3600, "val": 400, "test": 1000}
    assert mnist.x_train.shape == (3600, 40)
    assert mnist.x_val.shape == (400, 40)
    assert mnist.x_test.shape == (1000, 40)
    for key in TENSORS:
        expected = torch.float32 if key.startswith("x") else torch.int64
        assert getattr(mnist, key).dtype == expected, key
    labels = torch.cat([mnist.y_train, mnist.y_val, mnist.y_test])
    counts = torch.bincount(labels, minlength=10)
    assert counts.tolist() == [500] * 10  # make_dataset draws num_samples // 10 per class
    train_counts = torch.bincount(torch.cat([mnist.y_train, mnist.y_val]), minlength=10)
    assert int(train_counts.min()) >= 340 and int(train_counts.max()) <= 460
    # The generator centers and scales the whole set to mean 0, std 1.
    x = torch.cat([mnist.x_train, mnist.x_val, mnist.x_test]).double()
    assert abs(float(x.mean())) < 1e-4
    assert float(x.std(correction=0)) == pytest.approx(1.0, abs=1e-4)


def test_same_seed_identical_and_not_aliased_to_cache(mnist: SupervisedData) -> None:
    again = load_dataset("mnist1d")
    _assert_same(mnist, again)
    again.x_train.add_(1.0)  # mutating one result must not reach the cache or other results
    _assert_same(mnist, load_dataset("mnist1d"))


def test_different_seed_different_data() -> None:
    a = load_dataset("mnist1d", seed=0, n_samples=200)
    b = load_dataset("mnist1d", seed=1, n_samples=200)
    assert a.x_test.shape == b.x_test.shape == (40, 40)
    assert not torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, b.x_train)
    _assert_same(a, load_dataset("mnist1d", seed=0, n_samples=200))


@pytest.mark.parametrize(("fraction", "n_val"), [(0.0, 0), (0.1, 40), (0.25, 100), (0.999, 400)])
def test_val_split_sizes_exact_and_disjoint(fraction: float, n_val: int) -> None:
    if n_val == 400:  # rounds to every training sample: refused, naming the argument
        with pytest.raises(SpecError, match="val_fraction"):
            load_dataset("mnist1d", n_samples=500, val_fraction=fraction)
        return
    full = load_dataset("mnist1d", n_samples=500, val_fraction=0.0)
    d = load_dataset("mnist1d", n_samples=500, val_fraction=fraction)
    assert d.sizes == {"train": 400 - n_val, "val": n_val, "test": 100}
    assert d.x_val.shape == (n_val, 40) and d.y_val.shape == (n_val,)
    train, val, test = _rows(d.x_train), _rows(d.x_val), _rows(d.x_test)
    assert len(train) == 400 - n_val and len(val) == n_val  # MNIST-1D rows are all distinct
    assert not train & val and not train & test and not val & test
    assert train | val == _rows(full.x_train)
    assert torch.equal(d.x_test, full.x_test)
    # Labels travel with their rows.
    pairs = zip(full.x_train.numpy(), full.y_train.tolist(), strict=True)
    label_of = {row.tobytes(): y for row, y in pairs}
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val)):
        assert [label_of[row.tobytes()] for row in x.numpy()] == y.tolist()


def test_val_fraction_zero_keeps_order_and_empty_shapes(mnist: SupervisedData) -> None:
    d = load_dataset("mnist1d", val_fraction=0.0)
    assert d.x_val.shape == (0, 40) and d.y_val.shape == (0,)
    assert d.x_val.dtype == torch.float32 and d.y_val.dtype == torch.int64
    assert torch.equal(d.x_test, mnist.x_test)
    assert d.sizes["train"] == 4000
    raw_x, raw_y, _, _ = cls._mnist1d_arrays(0, 5000)  # the generator's own order
    assert np.array_equal(d.x_train.numpy(), raw_x) and np.array_equal(d.y_train.numpy(), raw_y)


def test_digits_same_seed_identical_different_seed_different() -> None:
    a = load_dataset("digits", seed=0, val_fraction=0.2)
    b = load_dataset("digits", seed=0, val_fraction=0.2)
    _assert_same(a, b)
    c = load_dataset("digits", seed=1, val_fraction=0.2)
    assert not torch.equal(a.y_test, c.y_test)


def test_global_rng_states_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCAPELAB_CACHE", str(tmp_path))
    clear_cache()
    calls = []
    real = mnist1d.data.make_dataset

    def counting(args: object) -> dict:
        calls.append(args)
        return real(args)

    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    np.random.seed(1234)
    random.seed(1234)
    np_before, py_before = np.random.get_state(), random.getstate()
    load_dataset("mnist1d", seed=7, n_samples=100)
    assert len(calls) == 1  # it really generated
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0]
    assert np.array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert random.getstate() == py_before


def test_disk_cache_round_trip_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCAPELAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    clear_cache()
    first = load_dataset("mnist1d", seed=3, n_samples=200)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1
    name = files[0].name
    version = cls._mnist1d_version()
    assert version in name and "seed3" in name and "n200" in name
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temporary behind

    def refuse(args: object) -> dict:
        raise AssertionError("make_dataset called although the disk cache holds the data")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)
    clear_cache()  # a fresh in-process cache: only the disk can answer
    second = load_dataset("mnist1d", seed=3, n_samples=200)
    _assert_same(first, second)
    with pytest.raises(AssertionError, match="make_dataset called"):
        load_dataset("mnist1d", seed=4, n_samples=200)  # not cached: generation is attempted


def test_cache_file_names_separate_every_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ESCAPELAB_CACHE", str(tmp_path))
    paths = {cls._mnist1d_cache_path(seed, n) for seed in (0, 1) for n in (100, 5000)}
    assert len(paths) == 4
    assert all(p.parent == tmp_path for p in paths)


def test_corrupt_cache_file_is_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCAPELAB_CACHE", str(tmp_path))
    clear_cache()
    reference = load_dataset("mnist1d", seed=5, n_samples=100)
    path = cls._mnist1d_cache_path(5, 100)
    path.write_bytes(b"not a zip file")
    clear_cache()
    _assert_same(reference, load_dataset("mnist1d", seed=5, n_samples=100))
    with np.load(path, allow_pickle=False) as f:  # rewritten with valid content
        assert f["x_train"].shape == (80, 40)


def test_unwritable_cache_dir_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ESCAPELAB_CACHE", str(blocker / "cache"))  # mkdir fails: parent is a file
    clear_cache()
    d = load_dataset("mnist1d", seed=6, n_samples=100)
    assert d.sizes == {"train": 72, "val": 8, "test": 20}
    assert list(tmp_path.iterdir()) == [blocker]


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"name: .*'mnist2d'.*mnist1d, digits"):
        load_dataset("mnist2d")
    for bad in (1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="val_fraction"):
            load_dataset("digits", val_fraction=bad)
    with pytest.raises(ValueError, match=r"n_samples.*multiple of 10"):
        load_dataset("mnist1d", n_samples=105)
    with pytest.raises(ValueError, match="n_samples"):
        load_dataset("mnist1d", n_samples=0)
    with pytest.raises(ValueError, match=r"n_samples.*1797"):
        load_dataset("digits", n_samples=5000)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("digits", seed=-1)


def test_digits_sizes_standardization_and_stratification() -> None:
    d = load_dataset("digits", seed=0, val_fraction=0.1)
    assert d.name == "digits" and d.n_classes == 10 and d.input_shape == (64,)
    assert sum(d.sizes.values()) == 1797
    assert d.sizes == {"train": 1293, "val": 144, "test": 360}
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    mean = d.x_train.double().mean(0)
    std = d.x_train.double().std(0, correction=0)
    assert float(mean.abs().max()) < 1e-6
    constant = std < 1e-12  # pixels that are 0 in every training image stay 0 (std 0 -> 1)
    assert 0 < int(constant.sum()) < 10
    assert torch.allclose(std[~constant], torch.ones_like(std[~constant]), atol=1e-5)
    assert torch.equal(d.x_train[:, constant], torch.zeros_like(d.x_train[:, constant]))
    # Stratified test split: 1797 has 174..183 per class, so 20 % is 34..37 of each.
    counts = torch.bincount(d.y_test, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 37


def test_digits_subsample_is_stratified() -> None:
    d = load_dataset("digits", seed=2, n_samples=500, val_fraction=0.0)
    assert d.sizes == {"train": 400, "val": 0, "test": 100}
    assert torch.bincount(d.y_test, minlength=10).tolist() == [10] * 10


def test_to_device_copies(mnist: SupervisedData) -> None:
    moved = mnist.to("meta")
    assert all(getattr(moved, key).device.type == "meta" for key in TENSORS)
    assert moved.input_shape == mnist.input_shape and moved.name == mnist.name
    assert mnist.x_train.device.type == "cpu"
    _assert_same(mnist, mnist.to("cpu"))


def test_shape_mismatch_rejected() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_val/y_val"):
        SupervisedData(x, y, x, y[:3], x, y, name="t", n_classes=2, input_shape=(3,))


@pytest.mark.usefixtures("one_blas_thread")
def test_logistic_regression_oracle_matches_published(mnist: SupervisedData) -> None:
    """Greydanus & Kobak report ~32 % test accuracy for logistic regression on MNIST-1D."""
    model = LogisticRegression(max_iter=300)
    model.fit(mnist.x_train.numpy(), mnist.y_train.numpy())
    accuracy = model.score(mnist.x_test.numpy(), mnist.y_test.numpy())
    assert 0.25 <= accuracy <= 0.42


@pytest.mark.usefixtures("one_blas_thread")
def test_digits_are_easy_for_logistic_regression() -> None:
    d = load_dataset("digits")
    model = LogisticRegression(max_iter=300).fit(d.x_train.numpy(), d.y_train.numpy())
    assert model.score(d.x_test.numpy(), d.y_test.numpy()) > 0.9


def test_task_and_class_count_must_agree() -> None:
    x, labels, targets = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64), torch.zeros(4, 1)
    with pytest.raises(ValueError, match="n_classes must be >= 1 for classification"):
        SupervisedData(x, labels, x, labels, x, labels, name="t", input_shape=(3,))
    with pytest.raises(ValueError, match="0 for regression, got 2"):
        SupervisedData(
            x, targets, x, targets, x, targets, "t", (3,), task="regression", n_classes=2
        )
    with pytest.raises(ValueError, match="task must be classification or regression"):
        SupervisedData(x, labels, x, labels, x, labels, "t", (3,), task="ranking", n_classes=2)
    data = SupervisedData(x, targets, x, targets, x, targets, "t", (3,), task="regression")
    assert data.regression and data.n_outputs == 1 and data.sizes["val"] == 4
