"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module's tests on one intra-op thread, restoring the setting afterwards.

    The oracle tests use tiny tensors, where intra-op parallelism only adds synchronisation; on a
    shared 2-core machine a busy neighbour process makes OpenMP's spin-waiting slow them down by
    10-100x. One thread also makes every reduction order, and so every bit, reproducible.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
