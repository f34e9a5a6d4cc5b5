"""Exercise 03 — the pre-training loss (GPT-1, Radford et al. 2018, eq. 1), as a mean to minimise.

    L = −(1/N) Σ_i log P(u_i | u_<i),   summed over the N targets that are not −100 (ignored positions)

Check: minirlhf.course.exercises.check_causal_lm_loss(causal_lm_loss)
"""

import torch


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V) for the next token at every position; targets (B, T) already shifted, −100 = ignore."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V) log P(· | u_<i), stable
    keep = targets != -100  # (B, T) True where there is a token to predict
    safe_targets = targets.masked_fill(~keep, 0)  # −100 is not a valid index; those positions are dropped below
    log_p_target = log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (B, T) log P(u_i | u_<i)
    return -(log_p_target * keep).sum() / keep.sum()  # mean over the kept positions only
