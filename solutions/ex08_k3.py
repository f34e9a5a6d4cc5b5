"""Exercise 08 — the k3 estimator of KL(π_RL ‖ π_SFT) (Schulman, "Approximating KL divergence", 2020).

For a token y sampled from π_RL, with r = π_SFT(y) / π_RL(y):

    k1 = −log r                 unbiased, but negative whenever π_SFT(y) > π_RL(y)
    k3 = (r − 1) − log r        unbiased too (E[r] = 1), and never negative since log r ≤ r − 1

Check: minirlhf.course.exercises.check_k3(k3)
"""

import torch


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """logp = log π_RL(y_t), ref_logp = log π_SFT(y_t), any shape -> per-token k3, same shape."""
    log_r = ref_logp - logp  # log(π_SFT/π_RL)
    return (torch.exp(log_r) - 1) - log_r
