"""The closed-form one-hidden-layer Hessian against torch.func's forward-over-reverse Hessian."""

from __future__ import annotations

import pytest
import torch

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective, Objective


@pytest.mark.parametrize(
    ("width", "activation", "bias", "output_bias", "d_out"),
    [
        (5, "tanh", True, False, 1),
        (4, "erf", True, True, 2),
        (3, "softplus", False, True, 2),
        (4, "sigmoid", False, False, 1),
        (4, "linear", True, True, 3),
        (1, "erf", False, False, 1),
        (3, "relu", True, False, 1),
    ],
)
def test_closed_form_equals_autodiff(width, activation, bias, output_bias, d_out) -> None:
    gen = torch.Generator().manual_seed(width * 7 + d_out)
    arch = Architecture(3, (width,), d_out, activation, bias, output_bias)
    theta = arch.init(5, seed=width, scheme="normal")
    x = torch.randn(41, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(41, d_out, generator=gen, dtype=torch.float64)
    obj = DataObjective(arch, x, y)
    closed = obj.hessian(theta, member_chunk=2)
    reference = Objective.hessian(obj, theta)
    assert closed.shape == (5, arch.n_params, arch.n_params)
    torch.testing.assert_close(closed, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed, closed.transpose(1, 2), rtol=0, atol=0)
