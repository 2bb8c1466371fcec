"""Ridge regression for many ridges, seeds and models at once, from one spectral decomposition.

For features Z (n, k) and targets y (n, C), ridge regression minimising |Z a - y|^2 +
delta |a|^2 has, with the thin SVD Z = P diag(s) Q^T and c = P^T y,

* training residual |y - Z a|^2 = |y|^2 - |c|^2 + sum_r (delta / (s_r^2 + delta))^2 |c_r|^2,
* predictions at new inputs Z' a = (Z' Q diag(s)) diag(1 / (s^2 + delta)) c,

so one decomposition serves every ridge. Kernel ridge regression (features with ZZ^T = K) is
the same with P, s^2 the eigenvectors and eigenvalues of the training Gram matrix and the
"lifted" evaluation matrix K' P in place of Z' Q diag(s). Everything carries a leading batch axis
(seeds): torch.linalg's SVD and eigh are batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Spectral:
    """A decomposed training problem, batch axis S first: ``power`` (S, r) = s^2, ``coef``
    (S, r, C) = P^T y, ``y_sq`` (S,) = |y|^2, ``lifted`` (S, N, r) for the N evaluation inputs."""

    power: Tensor
    coef: Tensor
    y_sq: Tensor
    lifted: Tensor

    @staticmethod
    def from_features(z: Tensor, y: Tensor, z_eval: Tensor) -> Spectral:
        """From features z (S, n, k), targets y (S, n, C) and evaluation features (S, N, k)."""
        p, s, qt = torch.linalg.svd(z, full_matrices=False)
        return Spectral(s.square(), p.mT @ y, y.square().sum((1, 2)), (z_eval @ qt.mT) * s[:, None])

    @staticmethod
    def from_kernel(gram: Tensor, y: Tensor, gram_eval: Tensor) -> Spectral:
        """From Gram matrices (S, n, n), targets (S, n, C) and K(eval, train) (S, N, n)."""
        evals, evecs = torch.linalg.eigh(gram)
        evals = evals.clamp_min(0.0)
        return Spectral(evals, evecs.mT @ y, y.square().sum((1, 2)), gram_eval @ evecs)

    def train_sse(self, deltas: Tensor) -> Tensor:
        """Training sum of squared errors (S, R) at every ridge in ``deltas`` (R,)."""
        shrink = deltas[None, :, None] / (self.power[:, None, :] + deltas[None, :, None])
        explained = self.coef.square().sum(2)  # (S, r)
        outside = self.y_sq - explained.sum(1)
        return outside[:, None] + (shrink.square() * explained[:, None, :]).sum(2)

    def predict(self, deltas: Tensor) -> Tensor:
        """Predictions (S, R, N, C) at the evaluation inputs for every ridge."""
        scaled = self.coef[:, None] / (self.power[:, None, :, None] + deltas[None, :, None, None])
        return torch.einsum("snr,sqrc->sqnc", self.lifted, scaled)


__all__ = ["Spectral"]
