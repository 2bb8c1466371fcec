"""Teacher-student regression data as a :class:`SupervisedData` of task ``regression``.

Inputs are standard Gaussian samples, targets the teacher's outputs (no noise), so the lottery
machinery (IMP, its controls, the trainer's early stopping) runs on the same problems as the
landscape experiments, with half the mean squared error as the loss.
"""

from __future__ import annotations

import torch

from escapelab.config import SpecError
from escapelab.data.datasets import SupervisedData
from escapelab.problems.teacher import Teacher, gaussian_inputs
from escapelab.seeding import derive_seed


def teacher_student_data(
    teacher: Teacher,
    n_train: int = 4000,
    n_test: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> SupervisedData:
    """``n_train`` (of which ``val_fraction`` for validation) and ``n_test`` samples of
    x ~ N(0, I_d) labelled y = teacher(x), as float32; ``seed`` draws the inputs."""
    if n_train < 2 or n_test < 1:
        raise SpecError("n_train", f"need n_train >= 2 and n_test >= 1, got {n_train}, {n_test}")
    if not 0.0 <= val_fraction < 1.0:
        raise SpecError("val_fraction", f"expected a number in [0, 1), got {val_fraction!r}")
    n_val = round(val_fraction * n_train)
    if n_val >= n_train:
        raise SpecError("val_fraction", f"leaves none of the {n_train} samples for training")
    d = teacher.arch.d_in
    x = gaussian_inputs(n_train + n_test, d, derive_seed("teacher-data", seed))
    y = teacher(x)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    x, y = x.float(), y.float()
    return SupervisedData(
        x_train=x[train].contiguous(),
        y_train=y[train].contiguous(),
        x_val=x[val].contiguous(),
        y_val=y[val].contiguous(),
        x_test=x[n_train:].contiguous(),
        y_test=y[n_train:].contiguous(),
        name="teacher",
        input_shape=(d,),
        task="regression",
    )
