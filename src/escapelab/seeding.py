"""Seeds that depend only on what they name.

Every random draw in escapelab (a member's initial weights, a teacher, a data sample, a batch
order, a random mask) takes its generator's seed from :func:`derive_seed` applied to a tuple of
keys that say what is drawn, e.g. ``("init", seed, i)`` for member i. A member's weights then
depend only on (seed, i): not on the ensemble it is trained in, on how seeds are split into tasks,
on the device or on the order in which tasks run.
"""

from __future__ import annotations

import hashlib


def derive_seed(*keys: object) -> int:
    """A 63-bit seed that depends only on ``keys``: stable across runs, platforms and chunkings.

    The keys are joined by ``:`` as strings and hashed with SHA-256 (whose output is uniform and
    platform independent, unlike Python's ``hash``); the first 8 bytes, shifted right by one,
    fit torch's and numpy's signed 64-bit seeds.
    """
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
