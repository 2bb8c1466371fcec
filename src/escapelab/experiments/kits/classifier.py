"""The classifier kit: data and network sections of the lottery-ticket experiments.

:class:`DataSpec` names the data sets (MNIST-1D, digits, or the teacher-student regression
problem of a :class:`~escapelab.experiments.kits.teacher_student.TeacherSpec`) and
:class:`ClassifierSpec` the network; :func:`load_task_data` and :func:`stacked_classifier` turn
them into tensors and a stacked ensemble on a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from escapelab.config import constraint
from escapelab.data.datasets import SupervisedData, load_dataset
from escapelab.data.teacher_student import teacher_student_data
from escapelab.experiments.kits.teacher_student import TeacherSpec, build_teacher
from escapelab.nets.classifiers import build_model
from escapelab.nets.stacked import StackedModel


@dataclass(frozen=True)
class ClassifierSpec:
    """The network: an MLP with ``hidden`` widths, or the MNIST-1D paper's 1-D CNN."""

    model: Literal["mlp", "cnn1d"] = "mlp"
    hidden: tuple[int, ...] = field(default=(100, 100), metadata=constraint(ge=1))
    channels: int = field(default=25, metadata=constraint(ge=1, help="cnn1d only"))
    activation: Literal["relu", "erf", "tanh", "softplus", "sigmoid", "linear"] = "relu"

    @property
    def label(self) -> str:
        """E.g. ``mlp 100-100`` or ``cnn1d 25 channels``."""
        if self.model == "cnn1d":
            return f"cnn1d {self.channels} channels"
        return f"mlp {'-'.join(map(str, self.hidden))} {self.activation}"


@dataclass(frozen=True)
class DataSpec:
    """Which datasets, the data variant (seed) and the validation share of the training set.
    ``teacher`` is the teacher-student regression problem of ``teacher`` with ``n_train`` and
    ``n_test`` Gaussian samples (half the mean squared error; no accuracy)."""

    datasets: tuple[Literal["mnist1d", "digits", "teacher"], ...] = ("mnist1d", "digits")
    seed: int = 0
    val_fraction: float = field(default=0.1, metadata=constraint(gt=0, lt=1))
    teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(d=8, width=4))
    n_train: int = field(default=4000, metadata=constraint(ge=2, help="teacher only"))
    n_test: int = field(default=1000, metadata=constraint(ge=1, help="teacher only"))


def load_task_data(spec: DataSpec, name: str, device: torch.device) -> SupervisedData:
    """The dataset ``name`` as the spec asks for it, on ``device``."""
    if name == "teacher":
        teacher = build_teacher(spec.teacher)
        data = teacher_student_data(
            teacher, spec.n_train, spec.n_test, spec.seed, spec.val_fraction
        )
        return data.to(device)
    return load_dataset(name, seed=spec.seed, val_fraction=spec.val_fraction).to(device)


def stacked_classifier(
    net: ClassifierSpec, data: SupervisedData, device: torch.device
) -> StackedModel:
    """A stacked ensemble of the spec's network for ``data``'s inputs and classes."""

    def factory() -> torch.nn.Module:
        return build_model(
            net.model,
            data.input_shape,
            data.n_outputs,
            hidden=net.hidden,
            channels=net.channels,
            activation=net.activation,
        )

    return StackedModel(factory, device=device)
