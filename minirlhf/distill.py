"""Best-of-n distillation: rejection-sampling fine-tuning (Touvron et al. 2023, Llama 2 §3.2.3; expert iteration).

Best-of-n *sampling* (evaluate.best_of_n_kl, overoptimisation.py) needs n answers and a reward model at every
request. Distillation pays that cost once, at training time, and keeps a single policy:

    1. sample    n answers y_1..y_n ~ π(·|x) for each training prompt x             (chat.generate_responses)
    2. select    keep y* = argmax_i r_θ(x, y_i), the reward model's favourite        (reward.score_responses)
    3. fine-tune SFT on the pairs (x, y*), the prompt masked as in step 1           (sft.train_sft)

n is the KL knob: best-of-n sampling is log n − (n − 1)/n nats from π (Stiennon et al. 2020, App. G.3), and the
distilled policy imitates it, so a larger n moves further from SFT and optimises r_θ harder (and, past some n,
over-optimises it: Gao et al. 2022). Repeating the three steps from the new policy (`rounds` > 1) is expert
iteration. A favourite that never ended (no EOS within max_new_tokens) is scored `missing_eos_penalty`, as in PPO,
and a prompt whose favourite still did not end is dropped: SFT would teach it to end, which it never did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from minirlhf.chat import generate_responses
from minirlhf.reward import score_responses
from minirlhf.sft import SFTConfig, train_sft


@dataclass
class DistillConfig:
    n: int = 4                       # answers sampled per prompt; the RM's favourite is kept (the KL knob)
    rounds: int = 1                  # sample → select → fine-tune cycles (> 1: expert iteration)
    max_new_tokens: int = 24         # answer length cap, as PPO's
    temperature: float = 1.0         # sampling temperature (the policy's own distribution)
    missing_eos_penalty: float | None = -1.0   # as PPOConfig: an answer without EOS scores this; None = off
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(epochs=4, lr=1e-4))  # step 3: SFT's recipe at a
    # third of its learning rate (the policy is fine-tuned already, and these are its own answers)
    seed: int = 0                    # sampling, and the fine-tuning's order

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"DistillConfig.n = {self.n}: best-of-n needs n >= 1 (n = 1 is plain self-distillation)")
        if self.rounds < 1:
            raise ValueError(f"DistillConfig.rounds = {self.rounds}: must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"DistillConfig.temperature = {self.temperature}: sampling needs a temperature > 0")


def best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """scores (M·n,) of M prompts' n answers each, prompt-major (answers j·n .. j·n+n−1 belong to prompt j) ->
    (M,) the index of each prompt's favourite among all M·n answers (the first on a tie)."""
    if scores.numel() % n != 0:
        raise ValueError(f"{scores.numel()} scores are not n = {n} answers for each prompt")
    M = scores.numel() // n
    return scores.view(M, n).argmax(dim=1) + torch.arange(M) * n   # (M,)


def train_best_of_n(policy, prompts: list, cfg: DistillConfig, *, reward_model, tokenizer, progress: bool = True,
                    callback=None):
    """Rejection-sampling fine-tuning of `policy` (trained in place) on its own best-of-n answers.

    prompts       the prompts to answer: world Prompts or user messages (a prompt may appear more than once: each
                  copy gets its own n answers and its own favourite)
    reward_model  r_θ, scored through reward.score_responses; frozen here
    callback      callback(round, stats) after every round

    Returns (policy, history): per round: round, samples, kept, rm_reward_all (mean r_θ of every answer),
    rm_reward_best (of the kept favourites), ended_best, sft_loss (the last step's), seconds; plus `sft`, the
    fine-tuning histories.
    """
    if not prompts:
        raise ValueError("no prompts: best-of-n distillation samples answers to prompts (world.prompts('train'))")
    reward_model.requires_grad_(False)
    history = {key: [] for key in ("round", "samples", "kept", "rm_reward_all", "rm_reward_best", "ended_best",
                                   "sft_loss", "seconds")}
    history["sft"] = []
    start = time.perf_counter()
    device = next(policy.parameters()).device
    for round_ in range(cfg.rounds):
        seed = cfg.seed + 1000 * round_
        generator = torch.Generator(device=device).manual_seed(seed)
        asked = [p for p in prompts for _ in range(cfg.n)]                 # prompt-major: n copies of each prompt
        answers = generate_responses(policy, tokenizer, asked, cfg.max_new_tokens, cfg.temperature,
                                     generator=generator)                  # 1. sample
        ended = [a.ended for a in answers]
        r_theta = score_responses(reward_model, tokenizer, asked, [a.text for a in answers], ended)   # (M·n,)
        scores = r_theta.clone()
        if cfg.missing_eos_penalty is not None:
            scores[~torch.tensor(ended)] = cfg.missing_eos_penalty
        best = best_of_n(scores, cfg.n).tolist()                           # 2. select
        kept = [(asked[i], answers[i].text) for i in best if ended[i]]
        if not kept:
            raise ValueError(f"round {round_}: none of the {len(prompts)} prompts has a favourite that ended; raise "
                             "max_new_tokens or start from a policy that ends its answers (SFT)")
        policy, sft_history = train_sft(policy, (kept, None), replace(cfg.sft, seed=seed), tokenizer=tokenizer,
                                        progress=progress)                 # 3. fine-tune
        stats = {"round": round_, "samples": len(asked), "kept": len(kept), "rm_reward_all": r_theta.mean().item(),
                 "rm_reward_best": r_theta[best].mean().item(), "ended_best": sum(ended[i] for i in best) / len(best),
                 "sft_loss": (sft_history["train_loss"] or [float("nan")])[-1], "seconds": time.perf_counter() - start}
        for key, value in stats.items():
            history[key].append(value)
        history["sft"].append(sft_history)
        if callback is not None:
            callback(round_, stats)
    policy.eval()
    return policy, history
