"""The Chooser: a random.Random that counts the information it generates.

Every random choice made while writing a document adds -log p(choice) to `nats`, so the corpus knows its own
entropy exactly: sum(nats) / sum(tokens) is the floor no language model can go below (notebook 01).
"""

from __future__ import annotations

import math
import random


class Chooser:
    """A random.Random that adds -log p of every choice to `self.nats` (the information it generated)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.nats = 0.0

    def choice(self, seq):
        self.nats += math.log(len(seq))
        return self.rng.choice(seq)

    def weighted(self, probs: dict):
        keys = list(probs)
        total = sum(probs.values())
        key = self.rng.choices(keys, weights=[probs[k] for k in keys])[0]
        self.nats -= math.log(probs[key] / total)
        return key

    def randint(self, a: int, b: int) -> int:
        self.nats += math.log(b - a + 1)
        return self.rng.randint(a, b)

    def bernoulli(self, p: float) -> bool:
        hit = self.rng.random() < p
        self.nats -= math.log(p if hit else 1 - p)
        return hit

    def sample(self, seq, k: int) -> list:
        """k distinct items in random order: log(n!/(n-k)!) nats."""
        self.nats += math.log(math.perm(len(seq), k))
        return self.rng.sample(list(seq), k)

    def subset(self, seq, k: int) -> list:
        """k distinct items in their original order: log C(n, k) nats."""
        seq = list(seq)
        self.nats += math.log(math.comb(len(seq), k))
        picked = set(self.rng.sample(range(len(seq)), k))
        return [x for i, x in enumerate(seq) if i in picked]
