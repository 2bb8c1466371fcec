"""Oracle tests of the lottery-ticket masks: applying, holding through training, reporting,
files and the flat masks of ensembles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from escapelab.tickets import masks as masks_module
from escapelab.tickets.masks import (
    MaskSet,
    load_checkpoint,
    masked_step,
    prunable_tensors,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")

WEIGHTS = ("0.weight", "2.weight", "4.weight")


def _mlp(seed: int = 0, hidden: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 3)
    ).double()


def _random_masks(model: nn.Module, seed: int = 1, density: float = 0.5) -> MaskSet:
    gen = torch.Generator().manual_seed(seed)
    return MaskSet(
        {
            name: torch.rand(p.shape, generator=gen) < density
            for name, p in prunable_tensors(model).items()
        }
    )


def _data(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    return x, torch.randn(32, 3, generator=gen, dtype=torch.float64)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, step=None) -> None:
    x, y = _data()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        if step is None:
            opt.step()
        else:
            step()


def _pruned_entries(model: nn.Module, masks: MaskSet) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach()[~m] for n, m in masks.items()])


def test_prunable_tensors_are_weights_unless_biases_are_asked_for() -> None:
    model = _mlp()
    assert list(prunable_tensors(model)) == list(WEIGHTS)
    assert list(prunable_tensors(model, include_bias=True)) == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"
    ]  # fmt: skip
    masks = MaskSet.ones(model)
    assert list(masks) == list(WEIGHTS)
    assert masks.density() == 1.0


def test_float_masks_become_boolean_and_other_values_are_refused() -> None:
    masks = MaskSet({"w": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
    assert masks["w"].dtype == torch.bool
    assert masks["w"].tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="'w' must be boolean or hold only the values 0 and 1"):
        MaskSet({"w": torch.tensor([1.0, 0.5])})


def test_apply_zeroes_exactly_the_pruned_entries() -> None:
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = _random_masks(model)
    with torch.no_grad():
        model[0].weight[~masks["0.weight"]] = float("inf")  # filled, not multiplied: no nan
    masks.apply(model)
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.equal(p[~masks[name]], torch.zeros_like(p[~masks[name]]))
            assert torch.equal(p[masks[name]], before[name][masks[name]])
        else:
            assert torch.equal(p, before[name])


def test_validation_names_an_unknown_parameter_and_a_shape_mismatch() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=r"mask 'net\.0\.weight' names no parameter of the model"):
        MaskSet({"net.0.weight": torch.ones(8, 5, dtype=torch.bool)}).apply(model)
    with pytest.raises(ValueError, match=r"mask '2\.weight' has shape \(8, 7\).*\(8, 8\)"):
        MaskSet({"2.weight": torch.ones(8, 7, dtype=torch.bool)}).validate(model)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    ],
    ids=["adam-wd", "adamw", "sgd-momentum"],
)
def test_attached_masks_hold_through_training_with_stale_optimizer_state(make_opt) -> None:
    model = _mlp()
    opt = make_opt(model.parameters())
    _train(model, opt, 3)  # dense steps: the optimizer's moments/momentum are nonzero everywhere
    masks = _random_masks(model)
    kept_before = {
        n: p.detach()[masks[n]].clone() for n, p in model.named_parameters() if n in masks
    }
    with masks.attach(model, opt):
        _train(model, opt, 20)
        assert torch.equal(
            _pruned_entries(model, masks),
            torch.zeros(masks.total() - masks.remaining(), dtype=torch.float64),
        )
        for name, p in model.named_parameters():
            if name in masks:
                assert p.grad is not None
                assert not p.grad[~masks[name]].any()
                assert not torch.equal(p.detach()[masks[name]], kept_before[name])


def test_gradient_hooks_alone_do_not_stop_stale_adam_moments() -> None:
    """Why attach takes the optimizer: the negative control of the test above."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    _train(model, opt, 3)
    masks = _random_masks(model)
    with masks.attach(model):
        _train(model, opt, 5)
    assert _pruned_entries(model, masks).any()


def test_a_fresh_adam_with_weight_decay_and_gradient_hooks_keeps_zeros() -> None:
    model = _mlp()
    masks = _random_masks(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    handle = masks.attach(model)
    _train(model, opt, 20)
    assert not _pruned_entries(model, masks).any()
    handle.remove()
    _train(model, opt, 1)  # detached: pruned entries get gradients again
    assert _pruned_entries(model, masks).any()


def test_masked_step_holds_the_masks_with_sgd_momentum() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
    _train(model, opt, 3)
    masks = _random_masks(model)
    masks.apply(model)
    _train(model, opt, 20, step=lambda: masked_step(opt, masks, model))
    assert not _pruned_entries(model, masks).any()


def test_sparsity_report_counts_are_exact() -> None:
    model = _mlp()
    masks = MaskSet.ones(model)
    masks["0.weight"][:, :2] = False  # 8 x 2 of 40 pruned
    masks["2.weight"][3] = False  # one row of 8 of 64 pruned
    masks["4.weight"].fill_(False)
    masks["4.weight"][0, 0] = True  # 1 of 24 kept
    masks.apply(model)
    with torch.no_grad():
        model[2].weight[0, 0] = 0.0  # a kept weight that happens to be zero
    report = masks.sparsity_report(model)
    rows = [(r.name, r.shape, r.total, r.remaining, r.nonzero) for r in report.layers]
    assert rows == [
        ("0.weight", (8, 5), 40, 24, 24),
        ("2.weight", (8, 8), 64, 56, 55),
        ("4.weight", (3, 8), 24, 1, 1),
    ]
    assert [r.density for r in report.layers] == [24 / 40, 56 / 64, 1 / 24]
    assert (report.total, report.remaining, report.density) == (128, 81, 81 / 128)
    assert masks.remaining() == 81 and masks.total() == 128
    assert str(report).splitlines()[-1].split()[:4] == ["global", "128", "81", "0.6328"]


@pytest.mark.parametrize("backend", ["torch", "safetensors"])
def test_save_load_round_trip_is_exact(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "safetensors":
        pytest.importorskip("safetensors")
    else:
        monkeypatch.setattr(masks_module, "_safetensors", lambda: None)
    model = _mlp()
    masks = _random_masks(model)
    masks.save(tmp_path / "masks")
    loaded = MaskSet.load(tmp_path / "masks", model)
    assert loaded == masks and list(loaded) == list(masks)
    assert all(m.dtype == torch.bool for m in loaded.values())
    wider = _mlp(hidden=9)
    with pytest.raises(ValueError, match=r"mask '0\.weight' has shape \(8, 5\).*\(9, 5\)"):
        MaskSet.load(tmp_path / "masks", wider)


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"0.weight": torch.ones(2, 2), "note": _Payload()}, path)
    with pytest.raises(ValueError, match="objects other than tensors"):
        MaskSet.load(path)
    torch.save({"0.weight": torch.ones(2, 2), "count": 3}, path)
    with pytest.raises(ValueError, match="mapping of names to tensors"):
        MaskSet.load(path)


def test_load_refuses_a_file_in_neither_format(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"is not a torch\.save archive|neither a torch\.save"):
        MaskSet.load(path)


class _Payload:
    """An arbitrary object that weights_only loading must not unpickle."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_checkpoint_round_trip_and_refusal(tmp_path: Path) -> None:
    model = _mlp(seed=3)
    masks = _random_masks(model)
    masks.apply(model)
    save_checkpoint(model, masks, tmp_path / "ckpt")
    fresh = _mlp(seed=4)
    loaded = load_checkpoint(fresh, tmp_path / "ckpt")
    assert loaded == masks and list(loaded) == list(masks)
    for (n, p), q in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    other = _mlp(hidden=9)
    untouched = {n: p.clone() for n, p in other.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"other shapes: '0\.weight' \(8, 5\) \(model: \(9, 5\)\), '0\.bias'"
    ):
        load_checkpoint(other, tmp_path / "ckpt")
    assert all(torch.equal(p, untouched[n]) for n, p in other.state_dict().items())
    deeper = nn.Sequential(*_mlp(), nn.Linear(3, 3)).double()
    with pytest.raises(ValueError, match=r"missing '5\.weight', '5\.bias'"):
        load_checkpoint(deeper, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(model, _saved(masks, tmp_path / "plain"))


def _saved(masks: MaskSet, path: Path) -> Path:
    masks.save(path)
    return path
