"""Tests of the small classifiers: shapes, parameter names and counts, vmap, argument checks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from escapelab.config import SpecError
from escapelab.nets.classifiers import (
    CNN1D,
    MLP,
    MODELS,
    LogisticRegression,
    build_model,
    cnn1d_lengths,
    cnn1d_min_length,
    n_parameters,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_models_constant() -> None:
    assert MODELS == ("mlp", "cnn1d", "logistic")


def test_builders_return_the_explicit_classes() -> None:
    assert type(build_model("mlp", (40,), 10)) is MLP
    assert type(build_model("cnn1d", (40,), 10)) is CNN1D
    assert type(build_model("logistic", (40,), 10)) is LogisticRegression


def test_parameter_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in build_model("mlp", (40,), 10).named_parameters()}
    assert shapes == {
        "net.0.weight": (100, 40),
        "net.0.bias": (100,),
        "net.2.weight": (100, 100),
        "net.2.bias": (100,),
        "net.4.weight": (10, 100),
        "net.4.bias": (10,),
    }
    shapes = {k: tuple(v.shape) for k, v in build_model("cnn1d", (40,), 10).named_parameters()}
    assert shapes == {
        "net.0.weight": (25, 1, 5),
        "net.0.bias": (25,),
        "net.2.weight": (25, 25, 3),
        "net.2.bias": (25,),
        "net.4.weight": (25, 25, 3),
        "net.4.bias": (25,),
        "net.7.weight": (10, 125),
        "net.7.bias": (10,),
    }
    shapes = {k: tuple(v.shape) for k, v in build_model("logistic", (40,), 10).named_parameters()}
    assert shapes == {"net.0.weight": (10, 40), "net.0.bias": (10,)}


@pytest.mark.parametrize(
    ("input_shape", "hidden", "expected"),
    [
        ((40,), (100, 100), 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),  # 15210
        ((64,), (32,), 64 * 32 + 32 + 32 * 10 + 10),
        ((8, 8), (5, 7, 3), 64 * 5 + 5 + 5 * 7 + 7 + 7 * 3 + 3 + 3 * 10 + 10),
        ((40,), (), 40 * 10 + 10),
    ],
)
def test_mlp_parameter_count_closed_form(
    input_shape: tuple[int, ...], hidden: tuple[int, ...], expected: int
) -> None:
    assert n_parameters(build_model("mlp", input_shape, 10, hidden=hidden)) == expected


def test_logistic_parameter_count() -> None:
    assert n_parameters(build_model("logistic", (40,), 10)) == 410
    assert n_parameters(build_model("logistic", (8, 8), 3)) == 64 * 3 + 3


@pytest.mark.parametrize(
    ("length", "channels", "final_length"),
    # By hand, L -> floor((L + 2 - k) / 2) + 1 with k = 5, 3, 3: 40 -> 19 -> 10 -> 5,
    # 64 -> 31 -> 16 -> 8, 3 -> 1 -> 1 -> 1.
    [(40, 25, 5), (64, 25, 8), (40, 8, 5), (3, 4, 1)],
)
def test_cnn1d_parameter_count_closed_form(length: int, channels: int, final_length: int) -> None:
    c = channels
    expected = (c * 1 * 5 + c) + 2 * (c * c * 3 + c) + (c * final_length * 10 + 10)
    model = build_model("cnn1d", (length,), 10, channels=channels)
    assert cnn1d_lengths(length)[-1] == final_length
    assert n_parameters(model) == expected
    assert n_parameters(build_model("cnn1d", (40,), 10)) == 5210  # the paper's ~5k-parameter CNN


def test_cnn1d_min_length() -> None:
    assert cnn1d_min_length() == 3
    assert cnn1d_lengths(40) == (19, 10, 5)


@pytest.mark.parametrize("name", MODELS)
def test_output_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (40,), 10)
    x = torch.randn(7, 40)
    before = x.clone()
    out = model(x)
    assert out.shape == (7, 10)
    assert model(x[:1]).shape == (1, 10)  # a batch of one stays batched
    assert torch.allclose(model(x[3]), out[3], atol=1e-6)  # one unbatched sample
    assert torch.equal(x, before)  # input untouched
    if name == "cnn1d":
        assert torch.allclose(model(x.unsqueeze(1)), out, atol=1e-6)  # (B, 1, L) as well


def test_mlp_flattens_image_inputs() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (8, 8), 10, hidden=(16,))
    x = torch.randn(5, 8, 8)
    assert model(x).shape == (5, 10) and model(x[0]).shape == (10,)
    flat = MLP((64,), 10, hidden=(16,))
    flat.load_state_dict(model.state_dict())  # same names and shapes
    assert torch.allclose(model(x), flat(x.reshape(5, 64)), atol=1e-6)


def test_cnn1d_matches_hand_written_forward() -> None:
    torch.manual_seed(1)
    model = build_model("cnn1d", (40,), 10, channels=6)
    p = dict(model.named_parameters())
    x = torch.randn(4, 40)
    h = x.unsqueeze(1)
    for i, k in ((0, 5), (2, 3), (4, 3)):
        assert p[f"net.{i}.weight"].shape[-1] == k
        h = torch.relu(nn.functional.conv1d(h, p[f"net.{i}.weight"], p[f"net.{i}.bias"], 2, 1))
    expected = h.reshape(4, -1) @ p["net.7.weight"].T + p["net.7.bias"]
    assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_vmap_over_stacked_copies_matches_each_copy(name: str) -> None:
    torch.manual_seed(2)
    models = [build_model(name, (40,), 10, hidden=(12, 9), channels=5) for _ in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    x = torch.randn(6, 40)
    stacked = vmap(call, in_dims=(0, 0, None))(params, buffers, x)
    assert stacked.shape == (3, 6, 10)
    for e, model in enumerate(models):
        assert torch.allclose(stacked[e], model(x), atol=1e-5)
    # Each copy on its own batch as well.
    xs = torch.randn(3, 6, 40)
    per_copy = vmap(call)(params, buffers, xs)
    for e, model in enumerate(models):
        assert torch.allclose(per_copy[e], model(xs[e]), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_per_sample_gradients_under_vmap(name: str) -> None:
    torch.manual_seed(3)
    model = build_model(name, (40,), 10, hidden=(8,), channels=4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.randn(5, 40), torch.randint(0, 10, (5,))

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi,))
        return nn.functional.cross_entropy(logits.unsqueeze(0), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in (0, 4):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, prm in model.named_parameters():
            assert torch.allclose(per_sample[k][i], prm.grad, atol=1e-5), k


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"name: .*'resnet'.*mlp, cnn1d, logistic"):
        build_model("resnet", (40,), 10)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (40,), 10, hidden=(100, 0))
    with pytest.raises(ValueError, match=r"input_shape: cnn1d needs signal length >= 3"):
        build_model("cnn1d", (2,), 10)
    with pytest.raises(ValueError, match=r"input_shape: cnn1d expects \(L,\) or \(1, L\)"):
        build_model("cnn1d", (2, 40), 10)
    with pytest.raises(ValueError, match="channels"):
        build_model("cnn1d", (40,), 10, channels=0)
    with pytest.raises(ValueError, match="n_classes"):
        build_model("logistic", (40,), 0)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", (), 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", (40, 0), 10)
    build_model("cnn1d", (1, 40), 10)  # an explicit channel axis is fine


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_shape_is_rejected(name: str) -> None:
    model = build_model(name, (40,), 10)
    with pytest.raises(ValueError, match=r"^x: "):
        model(torch.randn(4, 39))
    if name == "cnn1d":
        with pytest.raises(ValueError, match=r"^x: "):
            model(torch.randn(4, 2, 40))
