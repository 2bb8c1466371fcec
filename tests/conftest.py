"""Shared fixtures of the test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# The property tests draw the same examples on every run, so a CI verdict never depends on chance;
# ESCAPELAB_HYPOTHESIS=explore draws fresh ones (run it when changing validation code).
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("ESCAPELAB_HYPOTHESIS", "fixed"))


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


@pytest.fixture(scope="session")
def tiny_report_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with every experiment at a tiny size (:mod:`report_store`), built once."""
    from report_store import tiny_store

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tiny_store(tmp_path_factory.mktemp("report") / "store")
    finally:
        torch.set_num_threads(torch_threads)


@pytest.fixture(scope="session")
def tiny_report_site(tiny_report_store: Path) -> Path:
    """The report site of :func:`tiny_report_store`; returns the site's folder."""
    from escapelab.report.site import build_site

    return build_site(tiny_report_store, tiny_report_store.parent / "site").parent
