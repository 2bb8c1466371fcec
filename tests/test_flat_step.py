"""The mini-batch trainer's step without autograd overhead: flat buffers, closed-form loss
gradients and hand-written pullbacks, each against autograd or torch.optim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from escapelab.nets.classifiers import MLP, build_model
from escapelab.nets.stacked import StackedModel
from escapelab.optim.flat import FlatParameters
from escapelab.optim.minibatch import _mean_loss_and_grad, _per_sample_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def _autograd_grads(model: StackedModel, params, x, grad_outputs):
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    outputs = model.forward(leaves, x)
    grads = torch.autograd.grad(outputs, list(leaves.values()), grad_outputs)
    return outputs.detach(), dict(zip(leaves, grads, strict=True))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: MLP((20,), 4, hidden=(7, 5)),
        lambda: MLP((20,), 4, hidden=(6,), activation="tanh"),
        lambda: MLP((4, 5), 4, hidden=(6, 4), activation="softplus", bias=False),
        lambda: MLP((20,), 4, hidden=(), output_bias=False),
        lambda: build_model("cnn1d", (20,), 4, channels=3),  # autograd's pullback
    ],
)
def test_pullback_equals_autograd(factory):
    torch.manual_seed(0)
    model = StackedModel(factory, dtype=torch.float64)
    params = model.init([0, 1, 2])
    x = torch.randn(3, 9, *factory().input_shape, dtype=torch.float64)
    outputs, pullback = model.vjp(params, x)
    grad_outputs = torch.randn_like(outputs)
    grads = {n: torch.full_like(p, torch.nan) for n, p in params.items()}  # all overwritten
    pullback(grad_outputs, grads)
    expected_outputs, expected = _autograd_grads(model, params, x, grad_outputs)
    torch.testing.assert_close(outputs, expected_outputs, rtol=1e-12, atol=1e-12)
    for name in params:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("regression", [False, True])
def test_closed_form_loss_gradient_equals_autograd(regression):
    torch.manual_seed(1)
    outputs = torch.randn(2, 5, 3, dtype=torch.float64)
    if regression:
        y = torch.randn(2, 5, 3, dtype=torch.float64)
        per_member = 0.5 * (outputs - y).square().sum(2).mean(1)
    else:
        y = torch.randint(0, 3, (2, 5))
        per_member = F.cross_entropy(outputs.reshape(10, 3), y.reshape(10), reduction="none")
        per_member = per_member.view(2, 5).mean(1)
    leaf = outputs.clone().requires_grad_(True)
    _per_sample_loss(leaf, y, regression).mean(1).sum().backward()
    loss, grad = _mean_loss_and_grad(outputs.clone(), y, regression)
    torch.testing.assert_close(loss, per_member, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-14, atol=1e-14)


def test_flat_views_share_one_buffer_with_masked_entries_first_and_zero():
    tensors = {"a": torch.randn(2, 3), "w": torch.randn(2, 2, 2), "b": torch.randn(2)}
    keep = {"w": torch.tensor([[[1, 0], [0, 1]], [[0, 0], [1, 1]]], dtype=torch.bool)}
    flat = FlatParameters(tensors, keep)
    assert list(flat.views) == ["a", "w", "b"]  # the given order
    assert flat.masked == 8 and flat.data.numel() == 16
    assert torch.equal(flat.data[:8].view(2, 2, 2), tensors["w"] * keep["w"])
    assert torch.equal(flat.keep.view(2, 2, 2), keep["w"].float())
    for name, view in flat.views.items():
        assert view.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr()
        assert flat.grads[name].shape == view.shape
    assert torch.equal(flat.views["a"], tensors["a"])
    flat.grad.fill_(2.0)
    flat.mask_grad()
    assert torch.equal(flat.grads["w"], 2.0 * keep["w"].float())
    assert bool((flat.grads["b"] == 2).all())


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_one_flat_update_equals_one_optimizer_per_tensor(kind):
    torch.manual_seed(2)
    tensors = {"w": torch.randn(3, 4, 5), "b": torch.randn(3, 4)}
    flat = FlatParameters(tensors, {})
    opt = flat.optimizer(kind, 0.05, momentum=0.9, weight_decay=1e-3)
    reference = [t.clone().requires_grad_(True) for t in tensors.values()]
    if kind == "adam":
        ref_opt = torch.optim.Adam(reference, lr=0.05, weight_decay=1e-3, foreach=False)
    else:
        ref_opt = torch.optim.SGD(reference, lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in reference]
        for name, g, ref in zip(tensors, grads, reference, strict=True):
            flat.grads[name].copy_(g)
            ref.grad = g.clone()
        opt.step()
        ref_opt.step()
    for name, ref in zip(tensors, reference, strict=True):
        torch.testing.assert_close(flat.views[name], ref.detach(), rtol=1e-6, atol=1e-7)


def test_flat_parameters_refuse_a_misshapen_mask():
    with pytest.raises(ValueError, match="mask 'w' does not fit"):
        FlatParameters({"w": torch.zeros(2, 3)}, {"w": torch.ones(2, 4, dtype=torch.bool)})
