"""Over-optimisation, measured where Gao, Schulman & Hilton (2022) measured it: gold score against distance from SFT.

A reward model r_θ is a proxy for the labelers. Pushing a policy towards r_θ's favourites first raises the gold
score, then lowers it while r_θ keeps rising (Goodhart's law). Gao et al. measure how far the policy went by
d = √KL(π ‖ π_SFT) and find, for the gold score relative to the SFT policy's (their eqs. 1 and 2):

    best-of-n   gold(d) = d (α − β d)            (no training: sample n answers from SFT, keep r_θ's favourite)
    RL          gold(d) = d (α − β log d)        (PPO against r_θ)

α says how fast gold rises at first, β how soon it turns; a reward model trained on less data (our RM-1, round 1
only) turns sooner. Best-of-n's KL to SFT is known in closed form (Stiennon et al. 2020, App. G.3):

    KL_bon(n) = log n − (n − 1)/n

Best-of-n for every n comes from ONE set of N samples per prompt: among the N answers sorted by r_θ (ascending),
the i-th is the favourite of a random n-subset with probability C(i−1, n−1) / C(N, n). Averaging with these
weights is the mean over all C(N, n) subsets, exactly, without sampling any subset (`best_of_n_curve`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from minirlhf.evaluate import best_of_n_kl


def best_of_n_weights(N: int, n: int) -> np.ndarray:
    """(N,) w_i = C(i−1, n−1) / C(N, n): the chance that the i-th lowest of N is the highest of a random n-subset."""
    if not 1 <= n <= N:
        raise ValueError(f"best-of-n needs 1 <= n <= N = {N} samples; got n = {n}")
    return np.array([math.comb(i - 1, n - 1) / math.comb(N, n) for i in range(1, N + 1)])


def best_of_n_curve(rewards, gold, ns: Sequence[int]) -> list[dict]:
    """Best-of-n for each n in `ns`, from N samples per prompt, averaged over all n-subsets and over prompts.

    rewards, gold: (N, B) r_θ and gold score of sample j for prompt b. Returns one dict per n:
    {"n", "kl": KL_bon(n), "gold": mean gold of r_θ's favourite, "rm_reward": mean r_θ of the favourite,
    "win_rate_vs_sft": how often the favourite beats one SFT answer (any of the N, ties half) on gold}.
    """
    rewards, gold = np.asarray(rewards, dtype=float), np.asarray(gold, dtype=float)
    if rewards.ndim != 2 or rewards.shape != gold.shape:
        raise ValueError(f"rewards and gold must both be (N samples, B prompts); got {rewards.shape} and {gold.shape}")
    order = np.argsort(rewards, axis=0, kind="stable")                # (N, B) ascending r_θ per prompt
    gold_sorted = np.take_along_axis(gold, order, axis=0)             # (N, B)
    reward_sorted = np.take_along_axis(rewards, order, axis=0)        # (N, B)
    diff = gold_sorted[:, None, :] - gold[None, :, :]                 # (N, N, B) sample i vs SFT answer j
    beats = ((diff > 1e-9) + 0.5 * (np.abs(diff) <= 1e-9)).mean(1)    # (N, B) win rate of sample i vs SFT
    curve = []
    for n in ns:
        w = best_of_n_weights(rewards.shape[0], n)[:, None]           # (N, 1)
        curve.append({"n": int(n), "kl": best_of_n_kl(n), "gold": float((w * gold_sorted).sum(0).mean()),
                      "rm_reward": float((w * reward_sorted).sum(0).mean()),
                      "win_rate_vs_sft": float((w * beats).sum(0).mean())})
    return curve


# ---- Gao et al.'s functional forms -----------------------------------------------------------------------------


def gao_best_of_n(d, alpha: float, beta: float) -> np.ndarray:
    """gold(d) − gold(0) = d (α − β d) for best-of-n, d = √KL."""
    d = np.asarray(d, dtype=float)
    return d * (alpha - beta * d)


def gao_rl(d, alpha: float, beta: float) -> np.ndarray:
    """gold(d) − gold(0) = d (α − β log d) for RL, d = √KL (0 at d = 0)."""
    d = np.asarray(d, dtype=float)
    return d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))


def _fit(features: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    """Least squares gain ≈ features @ (α, −β): returns (α, β)."""
    (a, minus_b), *_ = np.linalg.lstsq(features, gain, rcond=None)
    return float(a), float(-minus_b)


def fit_best_of_n(d, gain) -> tuple[float, float]:
    """(α, β) of gain = d (α − β d) by least squares; d = √KL, gain = gold − gold of the SFT policy."""
    d, gain = _points(d, gain)
    return _fit(np.stack([d, d * d], axis=1), gain)


def fit_rl(d, gain) -> tuple[float, float]:
    """(α, β) of gain = d (α − β log d) by least squares; d = √KL, gain = gold − gold of the SFT policy."""
    d, gain = _points(d, gain)
    d_log_d = d * np.log(np.where(d > 0, d, 1.0))                     # d log d → 0 as d → 0
    return _fit(np.stack([d, d_log_d], axis=1), gain)


def _points(d, gain) -> tuple[np.ndarray, np.ndarray]:
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if d.shape != gain.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"a fit needs at least 2 points (d, gain) of equal length; got {d.shape} and {gain.shape}")
    if (d < 0).any():
        raise ValueError("d = √KL cannot be negative")
    return d, gain
