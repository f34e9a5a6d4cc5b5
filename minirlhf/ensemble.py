"""A reward-model ensemble: M reward models trained on the same comparisons, their rewards averaged.

One reward model is one random draw. Trained on the same comparisons in the same order, two RMs whose scalar
heads were drawn from different random states agree on most pairs but not on which failure type they neglect:
one misses swapped facts, the next unended answers (docs/calibration.md, "An ensemble of reward models"). The
mean of M of them,

    r(x, y) = 1/M · Σ_m r_m(x, y),

misses fewer, and it is harder for PPO to exploit than any one member (Coste et al. 2023, "Reward Model
Ensembles Help Mitigate Overoptimization": their "mean" objective). The price is M times the RM's training,
scoring and checkpoint. Each member is an ordinary `RewardModel` (reward.py), started from the SFT model and
trained with the pairwise loss; `normalize_reward` centres the ensemble as it centres one RM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from minirlhf.model import GPT, GPTConfig
from minirlhf.reward import RewardConfig, RewardModel, train_reward_model


def _check_n_members(n_members) -> None:
    if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"n_members must be a whole number >= 1, got {n_members!r}")


class RewardEnsemble(nn.Module):
    """r(x, y) = 1/M Σ_m r_m(x, y) − reward_bias: M RewardModels of one architecture, read like one."""

    def __init__(self, config: GPTConfig, n_members: int = 2, head_std: float | None = None, readout: str = "last",
                 flags: Sequence = (), surprise: float = 0.0):
        super().__init__()
        _check_n_members(n_members)
        self.config = config
        self.members = nn.ModuleList(RewardModel(config, head_std=head_std, readout=readout, flags=flags,
                                                 surprise=surprise) for _ in range(n_members))
        first = self.members[0]   # every member is built alike: the ensemble reads like one of them
        self.head_std, self.readout = first.head_std, first.readout
        self.flags, self.surprise = first.flags, first.surprise
        # subtracted from the mean reward; set by normalize_reward so the demonstrations' mean reward is 0
        self.register_buffer("reward_bias", torch.zeros(()))

    @classmethod
    def from_members(cls, members: Sequence[RewardModel]) -> RewardEnsemble:
        """An ensemble holding copies of trained reward models (one config, head_std, readout, set of flags and λ)."""
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one reward model")
        first = members[0]
        if any(_architecture(m) != _architecture(first) for m in members):
            raise ValueError("the members differ in architecture (GPTConfig, head_std, readout, flags or surprise); an "
                             "ensemble averages reward models of one architecture")
        ensemble = cls(first.config, n_members=len(members), head_std=first.head_std, readout=first.readout,
                       flags=first.flags, surprise=first.surprise)
        for mine, theirs in zip(ensemble.members, members):
            mine.load_state_dict(theirs.state_dict())
        return ensemble.to(next(first.parameters()).device)

    def checkpoint_extra(self) -> dict:
        """Constructor arguments besides the GPTConfig, stored so checkpoint.load can rebuild this model."""
        return {"n_members": len(self.members), "head_std": self.head_std, "readout": self.readout,
                "flags": list(self.flags), "surprise": self.surprise}

    def token_values(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The members' mean value at every position, minus reward_bias: (B, T)."""
        values = torch.stack([m.token_values(idx, attention_mask) for m in self.members])   # (M, B, T)
        return values.mean(dim=0) - self.reward_bias

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """r(x, y) for each row: the members' mean reward (each read as its readout says), minus reward_bias. (B,)."""
        rewards = torch.stack([m(idx, attention_mask) for m in self.members])                # (M, B)
        return rewards.mean(dim=0) - self.reward_bias


def _architecture(rm: RewardModel) -> tuple:
    return rm.config, rm.head_std, rm.readout, rm.flags, rm.surprise


def single_reward_model(rm: RewardModel | RewardEnsemble) -> RewardModel:
    """The reward model PPO's value function starts from: the RM itself, or an ensemble's first member (a value
    model made of M trunks would cost M times as much at every PPO step)."""
    return rm.members[0] if isinstance(rm, RewardEnsemble) else rm


def train_reward_ensemble(sft: GPT, data: tuple[Sequence, Sequence | None], cfg: RewardConfig, n_members: int, *,
                          tokenizer, progress: bool = True, readout: str = "last",
                          flags: Sequence = (), surprise: float = 0.0) -> tuple[RewardEnsemble, list[dict]]:
    """M reward models from the SFT model, one after the other, each `train_reward_model` with the same config,
    comparisons and shuffling order: they differ only in their head's random draw (torch's random state, which
    goes on from one member to the next). Member 0 is the RM that `RewardModel.from_gpt` + `train_reward_model`
    would have made. readout: where every member reads its reward (reward.READOUTS); flags: the labeler flags each
    member predicts (trained when cfg.flag_coef > 0); surprise: λ, the weight of the SFT model's surprise in each
    member. Returns (ensemble, one history per member)."""
    _check_n_members(n_members)
    members, histories = [], []
    for _ in range(n_members):
        # the heads drawn from torch's random state
        rm = RewardModel.from_gpt(sft, readout=readout, flags=flags, surprise=surprise)
        rm, history = train_reward_model(rm, data, cfg, tokenizer=tokenizer, progress=progress)
        members.append(rm)
        histories.append(history)
    return RewardEnsemble.from_members(members).eval(), histories
