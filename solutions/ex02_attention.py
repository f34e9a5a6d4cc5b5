"""Exercise 02 — causal self-attention (Vaswani et al. 2017, eq. 1, with GPT's causal mask).

    Attention(Q, K, V) = softmax(Q·Kᵀ / √d_k + M) · V,   M[t, j] = −∞ for j > t (no peeking at the future)

Check: minirlhf.course.exercises.check_attention(attention)
"""

import math

import torch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v: (B, nh, T, hs) -> (B, nh, T, hs), each position attending to itself and the past only."""
    T, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T): how much query t matches key j
    # True above the diagonal: key j lies in the future of query t (j > t).
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=q.device), diagonal=1)  # (T, T)
    scores = scores.masked_fill(future, float("-inf"))  # exp(−∞) = 0: the future gets no weight
    weights = torch.softmax(scores, dim=-1)  # (B, nh, T, T) each row sums to 1 over the keys
    return weights @ v  # (B, nh, T, hs) weighted average of the values
