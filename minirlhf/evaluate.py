"""Evaluation: what InstructGPT measured with human labelers, measured here with the gold labeler.

For each policy, on held-out test prompts (Ouyang et al. 2022, §4):
  - the gold score and each criterion (helpful, honest, harmless, well-formed), from *sampled* answers
    (greedy decoding hides the differences: CALIBRATION.md);
  - the win rate against SFT: how often the gold labeler prefers this policy's answer to SFT's answer for the
    same prompt (ties count half), the paper's headline "preferred to SFT 175B" number;
  - KL(π ‖ π_SFT) of the sampled answers (in nats per answer);
  - the pre-training validation loss, the "alignment tax" that PPO-ptx is meant to reduce;
  - best-of-n on the SFT policy: pick the RM's favourite of n samples, whose KL to SFT is analytic:
    KL_bon = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minirlhf.gold import gold_score
from minirlhf.model import GPT
from minirlhf.ppo import response_logprobs
from minirlhf.tokenizer import encode_chat_prompt

CRITERIA = ("helpful", "honest", "harmless", "well_formed")


@dataclass
class Samples:
    """One sampled answer per prompt, with its gold score and its log-probability under the policy."""
    prompts: list            # world Prompt objects
    texts: list[str]         # decoded answers (special tokens removed)
    ended: list[bool]        # the answer produced EOS
    lengths: list[int]       # answer length in tokens
    gold: list               # GoldScore per answer
    sequences: torch.Tensor  # (B, P+R) left-padded prompt + right-padded answer
    attention_mask: torch.Tensor
    prompt_length: int

    @property
    def gold_totals(self) -> list[float]:
        return [g.total for g in self.gold]


@torch.no_grad()
def sample_answers(model: GPT, tokenizer, world, prompts: list, temperature: float = 1.0, max_new_tokens: int = 32,
                   seed: int = 0) -> Samples:
    """Sample one answer per prompt (seeded) and score it with the gold labeler."""
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    encoded = [encode_chat_prompt(tokenizer, p.text) for p in prompts]
    out = model.generate(encoded, max_new_tokens, temperature=temperature, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, generator=generator)
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out.response_ids]
    ended = out.ended.tolist()
    gold = [gold_score(world, p, t, e) for p, t, e in zip(prompts, texts, ended)]
    return Samples(list(prompts), texts, ended, [len(ids) for ids in out.response_ids], gold, out.sequences,
                   out.attention_mask, out.prompt_length)


@torch.no_grad()
def answer_logprobs(model: GPT, samples: Samples, temperature: float = 1.0) -> torch.Tensor:
    """(B,) log π(y|x) of each sampled answer: Σ_t log π(y_t | x, y_<t) at the sampling temperature."""
    device = next(model.parameters()).device
    seq, mask, P = samples.sequences.to(device), samples.attention_mask.to(device), samples.prompt_length
    logits, _ = model(seq, attention_mask=mask)                                 # (B, P+R, V)
    logp, _ = response_logprobs(logits[:, P - 1:-1], seq[:, P:], temperature)   # (B, R)
    return (logp * mask[:, P:]).sum(dim=1).cpu()


def kl_to_reference(policy: GPT, reference: GPT, samples: Samples, temperature: float = 1.0) -> float:
    """KL(π ‖ π_ref) ≈ mean over sampled answers of log π(y|x) − log π_ref(y|x) (nats per answer)."""
    return float((answer_logprobs(policy, samples, temperature) - answer_logprobs(reference, samples, temperature)).mean())


def win_rate(scores: list[float], baseline: list[float], tie_tolerance: float = 1e-9) -> float:
    """Fraction of prompts where `scores` beats `baseline` (same prompts, same order); ties count half."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError(f"win_rate needs two equal, non-empty lists; got {len(scores)} and {len(baseline)}")
    wins = sum(1.0 if a > b + tie_tolerance else 0.5 if abs(a - b) <= tie_tolerance else 0.0
               for a, b in zip(scores, baseline))
    return wins / len(scores)


def summarize(samples: Samples) -> dict:
    """Mean gold total and criteria, ended fraction and mean length of a set of samples."""
    n = len(samples.gold)
    summary = {"gold": sum(samples.gold_totals) / n}
    for c in CRITERIA:
        summary[c] = sum(getattr(g, c) for g in samples.gold) / n
    summary["ended"] = sum(samples.ended) / n
    summary["length"] = sum(samples.lengths) / n
    return summary


def best_of_n_kl(n: int) -> float:
    """Analytic KL between best-of-n sampling and the base policy: log n − (n − 1)/n."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1; got {n}")
    return math.log(n) - (n - 1) / n


@torch.no_grad()
def best_of_n(policy: GPT, reward_model, tokenizer, world, prompts: list, n: int, temperature: float = 1.0,
              max_new_tokens: int = 32, seed: int = 0) -> dict:
    """Sample n answers per prompt from the policy, keep the one the reward model scores highest."""
    from minirlhf.reward import score_responses

    candidates = [sample_answers(policy, tokenizer, world, prompts, temperature, max_new_tokens, seed + i) for i in range(n)]
    rewards = torch.stack([score_responses(reward_model, tokenizer, prompts, s.texts, s.ended).cpu() for s in candidates])  # (n, B)
    best = rewards.argmax(dim=0)                                                                                         # (B,)
    gold = [candidates[int(best[b])].gold[b] for b in range(len(prompts))]
    return {"n": n, "gold": sum(g.total for g in gold) / len(gold), "gold_totals": [g.total for g in gold],
            "rm_reward": float(rewards.max(dim=0).values.mean()), "kl": best_of_n_kl(n)}
