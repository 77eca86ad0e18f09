"""Run seeds: one run seed derives independent streams for data order, init and noise."""

from __future__ import annotations

from qsgd.perturbations import noise_key

__all__ = ["derived_seeds"]

STREAMS = ("order", "init", "noise")


def derived_seeds(seed: int) -> dict[str, int]:
    """Independent streams of one run seed, shared by every arm: data order (stream 1), model
    init (2) and optimizer noise (3), each a SplitMix64 key of (seed, 0, 0, stream)."""
    return {name: noise_key(seed, 0, 0, stream) % (2**31 - 1)
            for stream, name in enumerate(STREAMS, start=1)}
