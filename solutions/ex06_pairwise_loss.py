"""Exercise 06 — the reward model's loss (InstructGPT eq. 1):

    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l)} [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]

For each prompt, every pair of its K ranked responses is one comparison: the higher-ranked y_w should score higher.

Check: minirlhf.course.exercises.check_pairwise_loss(pairwise_loss)
"""

import torch
import torch.nn.functional as F


def pairwise_loss(rewards: torch.Tensor, rankings: torch.Tensor) -> torch.Tensor:
    """rewards (N, K) r_θ(x, y_k); rankings (N, K) response indices BEST FIRST -> scalar loss."""
    N, K = rewards.shape
    per_prompt = []
    for n in range(N):
        pair_terms = []
        for i in range(K):
            for j in range(i + 1, K):  # ranked i above j: rankings[n, i] beats rankings[n, j]
                r_w = rewards[n, rankings[n, i]]
                r_l = rewards[n, rankings[n, j]]
                pair_terms.append(F.logsigmoid(r_w - r_l))  # log σ(r_w − r_l), stable for large gaps
        per_prompt.append(torch.stack(pair_terms).mean())  # the 1/C(K,2): mean over this prompt's pairs
    return -torch.stack(per_prompt).mean()  # average over prompts, negated: a loss to minimise
