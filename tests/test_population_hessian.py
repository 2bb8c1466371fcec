"""The closed-form population Hessians against autograd's forward-over-reverse Hessians."""

from __future__ import annotations

import pytest
import torch

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import Objective
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("activation", ["erf", "linear"])
@pytest.mark.parametrize(("d", "m", "k"), [(2, 5, 3), (4, 3, 4), (1, 2, 1)])
def test_closed_form_hessian_equals_autograd(activation: str, d: int, m: int, k: int) -> None:
    teacher = make_teacher(d=d, width=k, activation=activation, incoming="gaussian", seed=d + m)
    arch = Architecture(d, (m,), 1, activation, bias=False)
    objective = student_objective(teacher, arch, None)
    theta = arch.init(4, seed=m).to(torch.float64)
    theta[1, :d] = theta[1, d : 2 * d]  # two identical units
    theta[2, :d] = 0.0  # a zero incoming vector
    theta[3] = 3.0 * theta[3]  # large weights, far from the linear regime of erf
    closed = objective.hessian(theta)
    reference = Objective.hessian(objective, theta)  # the generic autograd path
    scale = float(reference.abs().max())
    assert torch.allclose(closed, reference, rtol=0, atol=1e-13 * scale)
    assert torch.equal(closed, closed.mT)


def test_closed_form_hessian_with_several_outputs() -> None:
    # the population objective takes any output width shared by student and teacher
    from escapelab.problems.population import PopulationObjective

    arch = Architecture(3, (4,), 2, "erf", bias=False)
    teacher_arch = Architecture(3, (2,), 2, "erf", bias=False)
    teacher_theta = teacher_arch.init(1, seed=7).to(torch.float64)[0]
    objective = PopulationObjective(arch, teacher_arch, teacher_theta)
    theta = arch.init(3, seed=1).to(torch.float64)
    reference = Objective.hessian(objective, theta)
    assert torch.allclose(objective.hessian(theta), reference, atol=1e-13)
