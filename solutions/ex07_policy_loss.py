"""Exercise 07b — PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

    ratio_t = π(y_t | ·) / π_old(y_t | ·) = exp(log π − log π_old)
    L = −mean_t min( ratio_t·A_t,  clip(ratio_t, 1 − ε, 1 + ε)·A_t )        over real tokens (mask == 1)

Check: minirlhf.course.exercises.check_policy_loss(policy_loss)
"""

import torch


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> torch.Tensor:
    """All inputs (B, R); returns a scalar with gradient w.r.t. logp."""
    ratio = torch.exp(logp - old_logp)  # (B, R) π/π_old
    objective = ratio * advantages
    clipped_objective = torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages
    pessimistic = torch.min(objective, clipped_objective)  # the lower bound: no reward for moving past 1 ± ε
    mask = mask.to(logp.dtype)
    return -(pessimistic * mask).sum() / mask.sum()  # mean over real tokens, negated to minimise
