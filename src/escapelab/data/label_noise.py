"""Label noise of the deep-double-descent experiments (Nakkiran et al. 2019): a share of the
training labels resampled uniformly over the classes (a resampled label may, with probability
1/classes, come back unchanged, as in the MNIST-1D notebook's recipe)."""

from __future__ import annotations

import torch
from torch import Tensor

from escapelab.config import SpecError


def resample_labels(labels: Tensor, share: float, n_classes: int, seed: int) -> Tensor:
    """A copy of ``labels`` whose first ``round(share * N)`` entries of a seeded permutation
    are replaced by uniform draws from 0..n_classes-1."""
    if not 0.0 <= share <= 1.0:
        raise SpecError("label_noise", f"must lie in [0, 1], got {share}")
    gen = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(labels), generator=gen)[: round(share * len(labels))]
    noisy = labels.clone()
    noisy[picked] = torch.randint(n_classes, (len(picked),), generator=gen).to(labels)
    return noisy


__all__ = ["resample_labels"]
