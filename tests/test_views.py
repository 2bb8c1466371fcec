"""The flat and named views of one ensemble: exact converters, the same function, and an IMP
ticket trained on teacher data classified by its exact Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escapelab.data.teacher_student import teacher_student_data
from escapelab.landscape.classify import ClassifyConfig, classify
from escapelab.nets.classifiers import MLP, Pointwise, build_model
from escapelab.nets.mlp import Architecture
from escapelab.nets.stacked import StackedModel
from escapelab.nets.views import (
    flat_to_masks,
    linear_layers,
    mask_to_flat,
    mlp_architecture,
    module_names,
    named_views,
    stacked_mlp,
    to_flat,
    to_named,
)
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.optim.minibatch import FitConfig
from escapelab.problems.objective import DataObjective
from escapelab.problems.teacher import make_teacher
from escapelab.tickets.imp import IMPConfig, run_imp
from escapelab.tickets.masks import MaskSet

pytestmark = pytest.mark.usefixtures("single_thread")

ARCHS = [
    Architecture(3, (4,), 2, bias=True, output_bias=False),
    Architecture(2, (5, 3), 1, "tanh", bias=True, output_bias=True),
    Architecture(4, (3,), 2, "erf", bias=False, output_bias=False),
]


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_flat_and_named_views_convert_exactly_and_compute_the_same_function(arch) -> None:
    theta = arch.init(5, seed=3, scheme="normal")
    named = to_named(arch, theta)
    assert list(named) == module_names(arch)
    assert torch.equal(to_flat(arch, named), theta)
    model = stacked_mlp(arch)
    assert model.check(named) == 5
    assert list(model.shapes) == module_names(arch)
    assert mlp_architecture(model.factory()) == arch
    x = torch.randn(17, arch.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stacked = model.forward(named, x, shared=True)
    assert torch.allclose(stacked, arch.forward(theta, x), rtol=1e-13, atol=1e-13)
    # one member as a plain module, for the curvature tools
    assert torch.allclose(model.member(named, 2)(x), arch.forward(theta[2], x), atol=1e-13)


def test_a_users_sequential_module_has_a_flat_view_too() -> None:
    def factory() -> nn.Module:
        return nn.Sequential(
            nn.Linear(3, 5),
            nn.Softplus(),
            nn.Linear(5, 4),
            nn.Softplus(),
            nn.Linear(4, 2, bias=False),
        )

    model = StackedModel(factory, dtype=torch.float64)
    params = model.init([0, 1, 2])
    arch, layers = mlp_architecture(factory()), linear_layers(factory())
    assert arch == Architecture(3, (5, 4), 2, "softplus", bias=True, output_bias=False)
    assert layers == ("0", "2", "4")
    theta = to_flat(arch, params, layers)
    assert torch.equal(theta[:, :15], params["0.weight"].reshape(3, -1))
    back = to_named(arch, theta, layers)
    assert list(back) == list(params) and all(torch.equal(back[n], params[n]) for n in params)
    x = torch.randn(11, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.forward(params, x, shared=True), arch.forward(theta, x), atol=1e-13)
    assert linear_layers(MLP((3,), 2, hidden=(4, 4))) == ("net.0", "net.2", "net.4")
    erf = nn.Sequential(nn.Linear(2, 3), Pointwise("erf"), nn.Linear(3, 1))
    assert mlp_architecture(erf).activation == "erf"


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 1)), "one and the same of"),
        (
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)),
            "one and the same of",
        ),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh()), "Linear, activation, Linear"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(5, 1)), "do not chain"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2), nn.Linear(4, 1)), "one and the same"),
        (nn.Conv1d(1, 2, 3), "got Conv1d"),
    ],
)
def test_modules_without_a_flat_view_are_named(module: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mlp_architecture(module)


def test_the_converters_name_what_does_not_fit() -> None:
    arch = ARCHS[0]
    named = to_named(arch, arch.init(2, seed=0))
    with pytest.raises(ValueError, match=r"missing \['net.0.bias'\]"):
        to_flat(arch, {k: v for k, v in named.items() if k != "net.0.bias"})
    with pytest.raises(ValueError, match=r"'net.2.weight' has shape \(2, 2, 3\)"):
        to_flat(arch, {**named, "net.2.weight": torch.zeros(2, 2, 3)})
    with pytest.raises(ValueError, match="without hidden layers"):
        mlp_architecture(build_model("logistic", (4,), 3))
    with pytest.raises(ValueError, match="got CNN1D"):
        mlp_architecture(build_model("cnn1d", (40,), 3))
    with pytest.raises(ValueError, match="layers names 1 Linear layers, the architecture has 2"):
        to_named(arch, arch.init(2, seed=0), layers=["0"])


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_flat_mask_round_trip_is_exact(arch: Architecture) -> None:
    gen = torch.Generator().manual_seed(5)
    flat = torch.rand(4, arch.n_params, generator=gen) < 0.6
    masks = flat_to_masks(arch, flat, include_bias=True)
    assert list(masks) == module_names(arch)
    assert torch.equal(mask_to_flat(arch, masks), flat)
    # weights-only masks: biases kept in the flat mask, and back again
    weight_masks = {n: masks[n] for n in module_names(arch, include_bias=False)}
    assert MaskSet(flat_to_masks(arch, mask_to_flat(arch, weight_masks))) == weight_masks
    # the flat mask masks theta exactly as the named masks mask its views
    theta = arch.init(4, seed=0, scheme="normal")
    by_views = theta.clone()
    MaskSet(masks).apply(named_views(arch, by_views))
    assert torch.equal(by_views, theta * flat)


def test_flat_masks_refuse_bad_names_shapes_and_pruned_biases() -> None:
    arch = ARCHS[0]
    assert module_names(arch, include_bias=False) == ["net.0.weight", "net.2.weight"]
    with pytest.raises(ValueError, match=r"mask 'net\.2\.bias' names no layer tensor"):
        mask_to_flat(arch, {"net.2.bias": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"'net\.2\.weight' has shape \(2, 3, 4\), expected"):
        mask_to_flat(
            arch,
            {
                "net.0.weight": torch.ones(2, 4, 3, dtype=torch.bool),
                "net.2.weight": torch.ones(2, 3, 4, dtype=torch.bool),
            },
        )
    flat = torch.ones(2, arch.n_params, dtype=torch.bool)
    flat[1, 12] = False  # the first hidden bias, after the 4 x 3 first-layer weights
    with pytest.raises(ValueError, match=r"prunes entries of 'net\.0\.bias'"):
        flat_to_masks(arch, flat)
    with pytest.raises(ValueError, match="last dim must be the architecture's 24 parameters"):
        flat_to_masks(arch, flat[:, :-1])


def test_an_imp_ticket_on_teacher_data_is_classified_by_its_exact_hessian() -> None:
    """IMP (mini-batch, named view) on a teacher's regression data; its tickets go to the flat
    view, are refined to critical points of their own subspace by the full-batch trainer, and
    are classified from the exact Hessian restricted to their unpruned weights."""
    teacher = make_teacher(d=3, width=2, activation="tanh", incoming="orthonormal", seed=0)
    data = teacher_student_data(teacher, n_train=220, n_test=50, seed=0, val_fraction=0.1)
    model = StackedModel(lambda: MLP((3,), 1, hidden=(4,), activation="tanh"))
    fit = FitConfig(steps=300, batch_size=50, eval_every=100)
    run = run_imp(model, data, fit, IMPConfig(levels=2, rate=0.3, controls=()), seeds=[0, 1, 2])

    arch = mlp_architecture(model.factory())
    assert arch == Architecture(3, (4,), 1, "tanh", bias=True, output_bias=True)
    theta = to_flat(arch, run.final).double()
    free = mask_to_flat(arch, run.masks)
    assert int((~free).sum(1)[0]) == sum(int((~m[0]).sum()) for m in run.masks.values())
    assert torch.equal(theta[~free], torch.zeros(int((~free).sum()), dtype=torch.float64))
    # the trained ticket is the same function in both views
    x, y = data.x_train.double(), data.y_train.double()
    outputs = stacked_mlp(arch).forward(to_named(arch, theta), x, shared=True)
    assert torch.allclose(outputs, arch.forward(theta, x), atol=1e-12)

    objective = DataObjective(arch, x, y)
    cfg = TrainConfig(steps=200, lr=3e-3, refine_steps=60, tol_global=1e-12)
    result = train(objective, theta, cfg, free=free)
    assert torch.equal(result.theta[~free], theta[~free])  # pruned weights stayed exactly zero
    endpoints = classify(objective, result, ClassifyConfig(tol_global=1e-12))
    for i, ep in enumerate(endpoints):
        assert ep.status == "converged" and ep.grad_norm <= cfg.tol_grad
        # oracle: the spectrum of the Hessian restricted to the ticket's free coordinates
        h = objective.hessian(result.theta[i : i + 1])[0]
        f = free[i]
        eigs = torch.linalg.eigvalsh(h[f][:, f])
        assert ep.eig_min == pytest.approx(float(eigs[0]), rel=1e-9, abs=1e-13)
        assert ep.eig_max == pytest.approx(float(eigs[-1]), rel=1e-9)
        expected = "saddle" if float(eigs[0]) < -1e-6 * float(eigs[-1]) else "local_min"
        assert ep.kind == expected
        # the unrestricted Hessian has other eigenvalues: the pruned directions matter
        assert int(f.sum()) < arch.n_params


@pytest.mark.parametrize("arch", [ARCHS[0], ARCHS[1]], ids=str)
def test_the_closed_form_and_the_module_route_give_one_hessian(arch: Architecture) -> None:
    """The objective's Hessian (closed form for one hidden layer, torch.func otherwise) of a
    flat member equals the curvature tools' Hessian of the same member as a module."""
    from escapelab.landscape.curvature import exact_hessian

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, arch.d_in, dtype=torch.float64, generator=gen)
    y = torch.randn(40, arch.d_out, dtype=torch.float64, generator=gen)
    theta = arch.init(3, seed=4, scheme="normal")
    flat = DataObjective(arch, x, y).hessian(theta)
    model, named = stacked_mlp(arch), to_named(arch, theta)

    def half_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs - targets).square().sum(-1).mean()

    for i in range(3):
        module = exact_hessian(model.member(named, i), half_mse, (x, y))
        assert torch.allclose(module, flat[i], rtol=1e-10, atol=1e-12)
