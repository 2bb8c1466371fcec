"""Oracle tests of the ensemble MLP (flat parameters, forward, init) and of the activations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from escapelab.nets.activations import ACTIVATIONS, get_activation
from escapelab.nets.mlp import Architecture

pytestmark = pytest.mark.usefixtures("single_thread")

ACT_NAMES = ("erf", "tanh", "softplus", "sigmoid", "relu", "linear")

ARCHS = [
    Architecture(3, (4,), 1, "tanh", bias=True, output_bias=False),
    Architecture(2, (5,), 2, "erf", bias=False, output_bias=True),
    Architecture(4, (3, 2), 1, "softplus", bias=True, output_bias=True),
    Architecture(1, (2, 3, 4), 3, "sigmoid", bias=False, output_bias=False),
]


def _expected_n_params(arch: Architecture) -> int:
    dims = [arch.d_in, *arch.widths, arch.d_out]
    total = 0
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        total += dims[i] * dims[i + 1]
        if arch.output_bias if last else arch.bias:
            total += dims[i + 1]
    return total


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_n_params_counts_every_weight_and_enabled_bias(arch: Architecture) -> None:
    assert arch.n_params == _expected_n_params(arch)


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_flatten_unflatten_roundtrip(arch: Architecture) -> None:
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(3, arch.n_params, generator=gen, dtype=torch.float64)
    layers = arch.unflatten(theta)
    assert len(layers) == len(arch.widths) + 1
    for layer, (fan_in, fan_out, has_bias) in zip(layers, arch.layer_dims, strict=True):
        assert layer.weight.shape == (3, fan_out, fan_in)
        assert (layer.bias is not None) == has_bias
        if has_bias:
            assert layer.bias.shape == (3, fan_out)
    assert torch.equal(arch.flatten(layers), theta)
    # a single flat vector works the same way
    single = arch.unflatten(theta[1])
    assert torch.equal(arch.flatten(single), theta[1])
    # the documented layout: W_1 row-major first
    fan_in, fan_out, _ = arch.layer_dims[0]
    assert torch.equal(layers[0].weight[2].reshape(-1), theta[2, : fan_in * fan_out])
    assert layers[0].weight[2, 1, 0] == theta[2, fan_in]


def test_unflatten_is_a_view_and_rejects_wrong_length() -> None:
    arch = Architecture(2, (3,), 1, "tanh", bias=True)
    theta = torch.zeros(2, arch.n_params, dtype=torch.float64)
    layers = arch.unflatten(theta)
    layers[0].bias[1, 2] = 7.0
    assert theta[1, 2 * 3 + 2] == 7.0
    with pytest.raises(ValueError, match="parameters"):
        arch.unflatten(torch.zeros(arch.n_params + 1))


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_forward_of_ensemble_equals_each_member_alone(arch: Architecture) -> None:
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(4, arch.n_params, generator=gen, dtype=torch.float64)
    x = torch.randn(17, arch.d_in, generator=gen, dtype=torch.float64)
    out = arch.forward(theta, x)
    assert out.shape == (4, 17, arch.d_out)
    for e in range(4):
        alone = arch.forward(theta[e], x)
        assert alone.shape == (17, arch.d_out)
        torch.testing.assert_close(out[e], alone, rtol=1e-14, atol=1e-14)
        lone_ensemble = arch.forward(theta[e : e + 1], x)
        torch.testing.assert_close(out[e], lone_ensemble[0], rtol=1e-14, atol=1e-14)


def test_forward_hand_computed_one_unit() -> None:
    # f(x) = a * erf((w.x + b) / sqrt2) + c
    arch = Architecture(2, (1,), 1, "erf", bias=True, output_bias=True)
    theta = torch.tensor([0.5, -1.0, 0.25, 2.0, -0.75], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    z = x @ torch.tensor([0.5, -1.0], dtype=torch.float64) + 0.25
    expected = 2.0 * torch.special.erf(z / math.sqrt(2.0)) - 0.75
    torch.testing.assert_close(arch.forward(theta, x)[:, 0], expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("scheme", ["glorot", "he", "normal"])
def test_init_member_depends_only_on_seed_and_index(scheme: str) -> None:
    arch = Architecture(3, (4, 2), 2, "tanh", bias=True, output_bias=True)
    block = arch.init(5, seed=11, scheme=scheme, first_member=0)
    assert block.shape == (5, arch.n_params)
    assert block.dtype == torch.float64
    for i in range(5):
        alone = arch.init(1, seed=11, scheme=scheme, first_member=i)
        assert torch.equal(block[i], alone[0])
    # a later chunk of the same ensemble is the matching slice
    assert torch.equal(arch.init(2, seed=11, scheme=scheme, first_member=3), block[3:5])
    # members differ from each other and across seeds
    assert not torch.equal(block[0], block[1])
    assert not torch.equal(arch.init(1, seed=12, scheme=scheme)[0], block[0])


def test_init_is_independent_of_dtype_apart_from_the_cast() -> None:
    arch = Architecture(5, (6,), 1, "erf", bias=False)
    f64 = arch.init(3, seed=4, dtype=torch.float64)
    f32 = arch.init(3, seed=4, dtype=torch.float32)
    assert f32.dtype == torch.float32
    assert torch.equal(f32, f64.to(torch.float32))


def test_init_statistics_and_biases() -> None:
    arch = Architecture(40, (60,), 1, "tanh", bias=True)
    theta = arch.init(20, seed=0, scheme="glorot", scale=2.0)
    layers = arch.unflatten(theta)
    assert torch.all(layers[0].bias == 0)
    std = layers[0].weight.std().item()
    assert abs(std - 2.0 * math.sqrt(2.0 / 100.0)) < 0.02 * 2.0 * math.sqrt(2.0 / 100.0)
    he = arch.unflatten(arch.init(20, seed=0, scheme="he"))[0].weight.std().item()
    assert abs(he - math.sqrt(2.0 / 40.0)) < 0.02 * math.sqrt(2.0 / 40.0)
    normal = arch.unflatten(arch.init(20, seed=0, scheme="normal", scale=0.3))
    assert abs(normal[0].bias.std().item() - 0.3) < 0.05 * 0.3
    with pytest.raises(ValueError, match="init scheme"):
        arch.init(1, seed=0, scheme="xavier")  # type: ignore[arg-type]


def _grid(name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    z = torch.linspace(-6.0, 6.0, 241, dtype=dtype)
    if name == "relu":
        z = z[z.abs() > 1e-3]
    return z


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_derivatives_match_autograd(name: str) -> None:
    act = get_activation(name)
    z = _grid(name).requires_grad_(True)
    f = act.fn(z)
    (g1,) = torch.autograd.grad(f.sum(), z, create_graph=True)
    if g1.requires_grad:
        (g2,) = torch.autograd.grad(g1.sum(), z)
    else:  # derivative does not depend on z (linear; relu away from 0)
        g2 = torch.zeros_like(z)
    zd = z.detach()
    torch.testing.assert_close(act.d1(zd), g1.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(act.d2(zd), g2.detach(), rtol=1e-12, atol=1e-14)


def test_activation_reference_values() -> None:
    z = torch.tensor([-1.5, 0.0, 0.7], dtype=torch.float64)
    erf_ref = torch.tensor([math.erf(v / math.sqrt(2.0)) for v in z.tolist()], dtype=z.dtype)
    torch.testing.assert_close(ACTIVATIONS["erf"].fn(z), erf_ref, rtol=1e-15, atol=1e-16)
    # sigma'(0) = sqrt(2/pi) for erf(z/sqrt2)
    assert ACTIVATIONS["erf"].d1(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(
        math.sqrt(2.0 / math.pi), rel=1e-15
    )
    sp = torch.tensor([math.log1p(math.exp(v)) for v in z.tolist()], dtype=z.dtype)
    torch.testing.assert_close(ACTIVATIONS["softplus"].fn(z), sp, rtol=1e-15, atol=1e-16)
    assert [ACTIVATIONS[n].odd for n in ACT_NAMES] == [True, True, False, False, False, True]
    with pytest.raises(ValueError, match="allowed: erf, linear, relu, sigmoid, softplus, tanh"):
        get_activation("gelu")


@pytest.mark.parametrize(
    ("name", "dtype", "tol"),
    [
        (n, dt, tol)
        for n in ACT_NAMES
        for dt, tol in ((torch.float32, 1e-6), (torch.float64, 1e-14))
    ],
)
def test_apply_writes_sigma_and_slope(name: str, dtype: torch.dtype, tol: float) -> None:
    act = get_activation(name)
    z = torch.cat([_grid(name, dtype), torch.tensor([-40.0, 40.0], dtype=dtype)])
    z = z.reshape(-1, 1).repeat(1, 3)  # 2-D like the trainer's buffers
    ref64 = z.to(torch.float64)
    want_fn = act.fn(ref64)
    want_d1 = act.d1(ref64)
    buf = z.clone()
    slope = torch.empty_like(z)
    out = act.apply_(buf, slope)
    assert out.data_ptr() == buf.data_ptr()  # in place
    assert out.dtype == dtype and slope.dtype == dtype
    assert (out.to(torch.float64) - want_fn).abs().max().item() <= tol
    assert (slope.to(torch.float64) - want_d1).abs().max().item() <= tol


def _reference_activation(name: str) -> nn.Module:
    class Erf(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.erf(z / math.sqrt(2.0))

    return {
        "erf": Erf,
        "tanh": nn.Tanh,
        "softplus": nn.Softplus,
        "sigmoid": nn.Sigmoid,
        "relu": nn.ReLU,
        "linear": nn.Identity,
    }[name]()


def _sequential(arch: Architecture, theta: torch.Tensor) -> nn.Sequential:
    modules: list[nn.Module] = []
    layers = arch.unflatten(theta)
    for i, (layer, (fan_in, fan_out, has_bias)) in enumerate(
        zip(layers, arch.layer_dims, strict=True)
    ):
        lin = nn.Linear(fan_in, fan_out, bias=has_bias, dtype=theta.dtype)
        with torch.no_grad():
            lin.weight.copy_(layer.weight)
            if has_bias:
                lin.bias.copy_(layer.bias)
        modules.append(lin)
        if i < len(layers) - 1:
            modules.append(_reference_activation(arch.activation))
    return nn.Sequential(*modules)


@settings(max_examples=60, deadline=None)
@given(
    d_in=st.integers(1, 4),
    widths=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    d_out=st.integers(1, 3),
    activation=st.sampled_from(ACT_NAMES),
    bias=st.booleans(),
    output_bias=st.booleans(),
    n_members=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_forward_matches_torch_sequential(
    d_in: int,
    widths: list[int],
    d_out: int,
    activation: str,
    bias: bool,
    output_bias: bool,
    n_members: int,
    seed: int,
) -> None:
    arch = Architecture(d_in, tuple(widths), d_out, activation, bias, output_bias)
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_members, arch.n_params, generator=gen, dtype=torch.float64)
    x = torch.randn(7, d_in, generator=gen, dtype=torch.float64)
    out = arch.forward(theta, x)
    assert out.shape == (n_members, 7, d_out)
    for e in range(n_members):
        net = _sequential(arch, theta[e])
        assert sum(p.numel() for p in net.parameters()) == arch.n_params
        with torch.no_grad():
            want = net(x)
        torch.testing.assert_close(out[e], want, rtol=1e-12, atol=1e-12)
