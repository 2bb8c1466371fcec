"""Small classifiers as plain ``torch.nn.Module``: MLP, the MNIST-1D paper's 1-D CNN, logistic.

Lottery-ticket experiments prune and rewind individual parameters by name, so each model keeps
its layers in one ``nn.Sequential`` called ``net`` with a fixed order, and reshapes its input in
``forward`` (outside ``net``) so the first layer is always ``net.0``. Parameter names:

``mlp`` with hidden widths (h_1, ..., h_k)
    ``net.{2i}.weight`` (fan_out, fan_in) and ``net.{2i}.bias`` for i = 0..k: Linear layers at even
    indices, ReLU at odd ones; ``net.{2k}`` is the output layer.
``logistic``
    ``net.0.weight`` (n_classes, n_features), ``net.0.bias``: the MLP without hidden layers.
``cnn1d``
    ``net.0``, ``net.2``, ``net.4`` (``.weight`` (channels, in_channels, kernel), ``.bias``): three
    Conv1d with kernels 5, 3, 3, stride 2, padding 1, each followed by ReLU; ``net.6`` flattens;
    ``net.7.weight`` (n_classes, channels * L_3), ``net.7.bias``: the linear read-out. For MNIST-1D
    (L = 40) the lengths are 40 -> 19 -> 10 -> 5 and, with 25 channels, 5210 parameters.

Every model accepts (B, *input_shape) and also one unbatched sample (*input_shape); forward has no
in-place operations on its input and no data-dependent control flow, so it runs under
``torch.func.functional_call`` and ``torch.func.vmap`` (over parameters, samples, or both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from escapelab.config import SpecError
from escapelab.nets.activations import get_activation

MODELS: tuple[str, ...] = ("mlp", "cnn1d", "logistic")

# (kernel, stride, padding) of the three convolutions of the MNIST-1D paper's CNN.
CNN1D_LAYERS: tuple[tuple[int, int, int], ...] = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise SpecError("input_shape", f"expected a non-empty tuple of positive ints, got {shape}")
    return shape


def _check_positive(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(field, f"expected an integer >= 1, got {value!r}")
    return value


class FlattenTrailing(nn.Module):
    """Merge the last ``n_dims`` dimensions, leaving any leading batch dimensions alone.

    Unlike ``nn.Flatten`` (which starts at dimension 1) this also works on an unbatched sample,
    as ``vmap`` over samples presents it.
    """

    def __init__(self, n_dims: int):
        super().__init__()
        self.n_dims = _check_positive("n_dims", n_dims)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(start_dim=x.dim() - self.n_dims)

    def extra_repr(self) -> str:
        return f"n_dims={self.n_dims}"


class Pointwise(nn.Module):
    """One of escapelab's activations (:mod:`escapelab.nets.activations`) as a module, so that
    an MLP can match a teacher's nonlinearity (``erf`` is erf(z / sqrt 2))."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = get_activation(name).fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class MLP(nn.Module):
    """Flatten, then Linear + activation (ReLU by default) for each hidden width, then Linear to
    ``n_classes`` outputs (logits, or regression outputs). ``bias`` switches the hidden layers'
    biases and ``output_bias`` the output layer's (both on by default; the teacher-student
    students have neither). Its parameters are the named view of a flat ensemble
    (:mod:`escapelab.nets.views`)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_classes: int,
        hidden: tuple[int, ...] = (100, 100),
        activation: str = "relu",
        bias: bool = True,
        output_bias: bool = True,
    ):
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        self.n_classes = _check_positive("n_classes", n_classes)
        self.hidden = tuple(hidden)
        self.activation, self.bias, self.output_bias = activation, bias, output_bias
        for width in self.hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise SpecError("hidden", f"widths must be integers >= 1, got {self.hidden}")
        n_in = 1
        for s in self.input_shape:
            n_in *= s
        self.n_features = n_in
        layers: list[nn.Module] = []
        for width in self.hidden:
            act = nn.ReLU() if activation == "relu" else Pointwise(activation)
            layers += [nn.Linear(n_in, width, bias=bias), act]
            n_in = width
        layers.append(nn.Linear(n_in, self.n_classes, bias=output_bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (..., n_classes) of inputs (..., *input_shape)."""
        n = len(self.input_shape)
        if x.dim() < n or tuple(x.shape[x.dim() - n :]) != self.input_shape:
            raise ValueError(
                f"x: expected shape (B, *{self.input_shape}) or {self.input_shape}, "
                f"got {tuple(x.shape)}"
            )
        return self.net(x.flatten(start_dim=x.dim() - n))

    def stacked_forward(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Logits (E, B, n_classes) of E parameter sets (stacked as in ``named_parameters``)
        on inputs (E, B, *input_shape): one ``baddbmm`` per layer, bias fused, which
        :class:`~escapelab.nets.stacked.StackedModel` prefers to vmapping :meth:`forward`."""
        return self._stacked_pass(params, x, None)

    def stacked_vjp(
        self, params: Mapping[str, Tensor], x: Tensor
    ) -> tuple[Tensor, Callable[[Tensor, Mapping[str, Tensor]], None]]:
        """Logits (E, B, n_classes) as :meth:`stacked_forward`, and the pullback: given
        d(loss)/d(logits) (E, B, n_classes) it writes d(loss)/d(parameter) into ``grads``
        (name -> tensor of the parameter's shape, overwritten) by hand-written backpropagation:
        per Linear layer one ``bmm`` for the weight gradient, one sum for the bias and one
        ``bmm`` for the layer's input, and one element-wise product per activation (no autograd
        graph; about half the time of autograd on the 40-100-100-10 MLP, issue 15)."""
        saved: dict[int, Tensor] = {}
        logits = self._stacked_pass(params, x, saved)

        def pullback(grad_logits: Tensor, grads: Mapping[str, Tensor]) -> None:
            g = grad_logits.transpose(1, 2)  # (E, features, B), as the pass runs
            for i in range(len(self.net) - 1, -1, -1):
                layer = self.net[i]
                if isinstance(layer, nn.Linear):
                    torch.bmm(g, saved[i].transpose(1, 2), out=grads[f"net.{i}.weight"])
                    if layer.bias is not None:
                        torch.sum(g, dim=2, out=grads[f"net.{i}.bias"])
                    if i > 0:
                        g = torch.bmm(params[f"net.{i}.weight"].transpose(1, 2), g)
                elif isinstance(layer, nn.ReLU):  # its output is the next layer's input
                    g = torch.ops.aten.threshold_backward(g, saved[i + 1], 0)
                else:
                    g = g * get_activation(self.activation).d1(saved[i])

        return logits, pullback

    def _stacked_pass(
        self, params: Mapping[str, Tensor], x: Tensor, saved: dict[int, Tensor] | None
    ) -> Tensor:
        """The batched forward pass, run feature-major: activations are (E, features, B), so
        each layer is ``W @ h + b`` and the weight gradient ``g @ h^T`` comes out in the
        weight's own layout. The logits are returned as an (E, B, n_classes) view of
        class-major memory, where a softmax over the classes is fast (over a contiguous last
        dimension of 10 classes, torch's CPU kernel is ~10x slower). ``saved`` (if given)
        receives each layer's input by index."""
        h = x.flatten(start_dim=2).transpose(1, 2)
        for i, layer in enumerate(self.net):
            if saved is not None:
                saved[i] = h
            if isinstance(layer, nn.Linear):
                weight, bias = params[f"net.{i}.weight"], params.get(f"net.{i}.bias")
                if bias is None:
                    h = torch.bmm(weight, h)
                else:
                    h = torch.baddbmm(bias.unsqueeze(2), weight, h)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu_(h)  # baddbmm's backward does not need its output
            else:
                h = layer(h)
        return h.transpose(1, 2)


class LogisticRegression(MLP):
    """Multinomial logistic regression: one Linear layer on the flattened input (``net.0``)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int):
        super().__init__(input_shape, n_classes, hidden=())


def cnn1d_lengths(length: int) -> tuple[int, ...]:
    """Signal lengths after each convolution of :class:`CNN1D` (floor((L + 2p - k) / s) + 1)."""
    out = []
    for kernel, stride, padding in CNN1D_LAYERS:
        length = (length + 2 * padding - kernel) // stride + 1
        out.append(length)
    return tuple(out)


def cnn1d_min_length() -> int:
    """The shortest input for which every convolution of :class:`CNN1D` has output length >= 1."""
    length = 1
    while min(cnn1d_lengths(length)) < 1:
        length += 1
    return length


class CNN1D(nn.Module):
    """The MNIST-1D paper's CNN: 3 x (Conv1d stride 2 + ReLU), flatten, Linear to the classes.

    ``input_shape`` is (L,) or (1, L); inputs (B, L) and (B, 1, L) are both accepted (a missing
    channel axis is added), as is one unbatched sample (L,).
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: int = 25):
        super().__init__()
        shape = _check_shape(input_shape)
        if len(shape) == 2 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 1:
            raise SpecError(
                "input_shape", f"cnn1d expects (L,) or (1, L) single-channel signals, got {shape}"
            )
        self.input_shape = tuple(input_shape)
        self.length = shape[0]
        self.n_classes = _check_positive("n_classes", n_classes)
        self.channels = _check_positive("channels", channels)
        minimum = cnn1d_min_length()
        if self.length < minimum:
            raise SpecError(
                "input_shape",
                f"cnn1d needs signal length >= {minimum} for its three stride-2 convolutions, "
                f"got {self.length}",
            )
        layers: list[nn.Module] = []
        in_channels = 1
        for kernel, stride, padding in CNN1D_LAYERS:
            layers += [
                nn.Conv1d(in_channels, self.channels, kernel, stride=stride, padding=padding),
                nn.ReLU(),
            ]
            in_channels = self.channels
        self.out_length = cnn1d_lengths(self.length)[-1]
        layers += [FlattenTrailing(2), nn.Linear(self.channels * self.out_length, self.n_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, n_classes) of (B, L) or (B, 1, L); (n_classes,) of one sample (L,)."""
        has_channel = x.dim() >= 3 and x.shape[-2] == 1
        if x.dim() < 1 or x.shape[-1] != self.length or x.dim() > 3:
            raise ValueError(
                f"x: expected shape (B, {self.length}), (B, 1, {self.length}) or "
                f"({self.length},), got {tuple(x.shape)}"
            )
        if x.dim() == 3 and not has_channel:
            raise ValueError(f"x: cnn1d takes one input channel, got shape {tuple(x.shape)}")
        return self.net(x if has_channel else x.unsqueeze(-2))


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    hidden: tuple[int, ...] = (100, 100),
    channels: int = 25,
    activation: str = "relu",
) -> nn.Module:
    """Model ``name`` (one of :data:`MODELS`) with PyTorch's default initialization.

    ``hidden`` and ``activation`` (relu or one of escapelab's activations: erf, tanh, softplus,
    sigmoid, linear) are used by ``mlp`` only and ``channels`` by ``cnn1d`` only; seed with
    ``torch.manual_seed`` beforehand for reproducible weights. Bad arguments raise
    :class:`~escapelab.config.SpecError` (a ``ValueError``) naming the field.
    """
    if name == "mlp":
        return MLP(input_shape, n_classes, hidden=hidden, activation=activation)
    if name == "cnn1d":
        return CNN1D(input_shape, n_classes, channels=channels)
    if name == "logistic":
        return LogisticRegression(input_shape, n_classes)
    raise SpecError("name", f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


def n_parameters(model: nn.Module) -> int:
    """Total number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CNN1D",
    "CNN1D_LAYERS",
    "MLP",
    "MODELS",
    "FlattenTrailing",
    "LogisticRegression",
    "build_model",
    "cnn1d_lengths",
    "cnn1d_min_length",
    "n_parameters",
]
