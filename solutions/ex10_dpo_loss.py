"""Exercise 10 — the DPO loss (Rafailov et al. 2023, eq. 7):

    L_DPO = −E_{(x, y_w, y_l)} log σ( β·[ (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)) ] )

r̂(x, y) = β·log(π(y|x)/π_ref(y|x)) is the policy's implicit reward: the reward model's pairwise loss, with r̂ in
place of r_θ. Each log π(y|x) is the sum of the answer's token log-probabilities.

Check: minirlhf.course.exercises.check_dpo_loss(dpo_loss)
"""

import torch
import torch.nn.functional as F


def dpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_logp_w: torch.Tensor, ref_logp_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """(B,) log-probs of the preferred (w) and the other (l) answer under π and π_ref -> scalar loss."""
    reward_w = beta * (logp_w - ref_logp_w)  # r̂(x, y_w) = β·log(π/π_ref) of the winner
    reward_l = beta * (logp_l - ref_logp_l)  # r̂(x, y_l) of the loser
    return -F.logsigmoid(reward_w - reward_l).mean()  # logsigmoid: stable for large margins; mean over the pairs
