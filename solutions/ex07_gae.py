"""Exercise 07a — generalised advantage estimation (Schulman et al. 2016) over a response's tokens.

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t)        with V(s_{t+1}) = 0 after the last real token (the episode ends)
    A_t = δ_t + γλ·A_{t+1}

Check: minirlhf.course.exercises.check_gae(gae_advantages)
"""

import torch


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                   lam: float) -> torch.Tensor:
    """rewards, values, mask: (B, R), mask = 1 on real response tokens then 0 (right padding). Returns (B, R)."""
    B, R = rewards.shape
    advantages = torch.zeros(B, R)
    for b in range(B):  # one episode at a time: plain loops, easy to follow
        next_value, next_advantage = 0.0, 0.0  # nothing after the end of the episode
        for t in reversed(range(R)):
            if mask[b, t] == 0:  # padding: not part of the episode
                continue
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_advantage = delta + gamma * lam * next_advantage
            advantages[b, t] = next_advantage
            next_value = values[b, t]
    return advantages
