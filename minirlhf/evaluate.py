"""Evaluation: what InstructGPT measured with human labelers, measured here with the gold labeler.

For each policy, on held-out test prompts (Ouyang et al. 2022, §4):
  - the gold score and each criterion (helpful, honest, harmless, well-formed), from *sampled* answers
    (greedy decoding hides the differences: docs/calibration.md);
  - the win rate against SFT: how often the gold labeler prefers this policy's answer to SFT's answer for the
    same prompt (ties count half), the paper's headline "preferred to SFT 175B" number;
  - KL(π ‖ π_SFT) of the sampled answers (in nats per answer);
  - the pre-training validation loss, the "alignment tax" that PPO-ptx is meant to reduce;
  - whether the chat uses its history: follow-up questions answered with and without the first turn.
`evaluate_policies` measures all of it. Best-of-n (the RM's favourite of n SFT samples, KL_bon = log n − (n − 1)/n,
Stiennon et al. 2020, App. G.3) is part of the over-optimisation study: minirlhf/overoptimisation.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from minirlhf.model import GPT, response_logits, token_logprobs
from minirlhf.pretrain import evaluate_loss
from minirlhf.reward import score_responses
from minirlhf.tokenizer import encode_chat_prompt
from minirlhf.world.gold import gold_score

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
                   seed: int = 0, batch_size: int = 128) -> Samples:
    """Sample one answer per prompt (seeded) and score it with the gold labeler.

    Prompts go through the model `batch_size` at a time, one generator for all of them: the KV cache of 600
    prompts at once took ~450 MB, a batch of 128 takes a fifth of it. Same seed and batch_size, same answers.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    encoded = [encode_chat_prompt(tokenizer, p) for p in prompts]   # with the history of multi-turn prompts
    outs = [model.generate(encoded[i:i + batch_size], max_new_tokens, temperature=temperature,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           generator=generator) for i in range(0, len(encoded), batch_size)]
    response_ids = [ids for out in outs for ids in out.response_ids]
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in response_ids]
    ended = [e for out in outs for e in out.ended.tolist()]
    gold = [gold_score(world, p, t, e) for p, t, e in zip(prompts, texts, ended)]
    sequences, attention_mask, prompt_length = _stack_batches(outs, tokenizer.pad_token_id)
    return Samples(list(prompts), texts, ended, [len(ids) for ids in response_ids], gold, sequences,
                   attention_mask, prompt_length)


def _stack_batches(outs: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The batches' (B_i, P_i + R_i) sequences as one (B, P + R): prompts left-padded to the longest P_i, answers
    right-padded to the longest R_i (positions come from the attention mask, so extra padding changes nothing)."""
    if len(outs) == 1:
        return outs[0].sequences, outs[0].attention_mask, outs[0].prompt_length
    P = max(o.prompt_length for o in outs)
    R = max(o.sequences.size(1) - o.prompt_length for o in outs)
    rows, masks = [], []
    for o in outs:
        p, r = o.prompt_length, o.sequences.size(1) - o.prompt_length
        seq = o.sequences.new_full((o.sequences.size(0), P + R), pad_id)
        mask = o.attention_mask.new_zeros((o.sequences.size(0), P + R))
        seq[:, P - p:P + r] = o.sequences         # the prompt ends at column P in every batch
        mask[:, P - p:P + r] = o.attention_mask
        rows.append(seq)
        masks.append(mask)
    return torch.cat(rows), torch.cat(masks), P


@torch.no_grad()
def answer_logprobs(model: GPT, samples: Samples, temperature: float = 1.0, batch_size: int = 128) -> torch.Tensor:
    """(B,) log π(y|x) of each sampled answer: Σ_t log π(y_t | x, y_<t) at the sampling temperature
    (`batch_size` answers per forward pass: the logits of 600 answers at once took ~350 MB)."""
    device = next(model.parameters()).device
    P, totals = samples.prompt_length, []
    for i in range(0, len(samples.sequences), batch_size):
        seq = samples.sequences[i:i + batch_size].to(device)
        mask = samples.attention_mask[i:i + batch_size].to(device)
        logp = token_logprobs(response_logits(model, seq, mask, P), seq[:, P:], temperature)    # (b, R)
        totals.append((logp * mask[:, P:]).sum(dim=1).cpu())
    return torch.cat(totals)


def kl_to_reference(policy: GPT, reference: GPT, samples: Samples, temperature: float = 1.0) -> float:
    """KL(π ‖ π_ref) ≈ mean over sampled answers of log π(y|x) − log π_ref(y|x) (nats per answer)."""
    return float((answer_logprobs(policy, samples, temperature) - answer_logprobs(reference, samples, temperature)).mean())


def rollout_gold(world, prompts: list, tokenizer):
    """An eval_fn for ppo.train_ppo: the gold labeler's mean score of each rollout's responses, logged as "gold"
    (never trained on). prompts: the world Prompts whose encodings were given to train_ppo, in the same order."""
    def eval_fn(rollout) -> dict:
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in rollout.response_ids]
        golds = [gold_score(world, prompts[i], text, ended)
                 for i, text, ended in zip(rollout.prompt_index, texts, rollout.ended.tolist())]
        return {"gold": sum(g.total for g in golds) / len(golds)}
    return eval_fn


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


def evaluate_policies(policies: dict, reward_model, tokenizer, world, val_ids: torch.Tensor, temperature: float = 1.0,
                      max_new_tokens: int = 24, seed: int = 0, samples_per_prompt: int = 1) -> dict:
    """Every policy on the world's held-out test prompts, `samples_per_prompt` sampled answers each (the same seed
    for all). Win rates pair the j-th answer of a policy with SFT's j-th answer to the same prompt: more samples per
    prompt do not change what a win rate measures, only how noisy it is (150 prompts alone: ±0.04). The follow-up
    questions are asked as many times (26 follow-ups alone: ±0.09).

    policies: {"pretrained": gpt, "sft": gpt, ...}; "sft" is required (the baseline of win rates and KL).
    val_ids: held-out pre-training tokens (the alignment tax). Returns {"seed", "policies": {name: gold, criteria,
    win_rate_vs_sft, kl_to_sft, rm_reward, pretrain_val_loss, ended, length}, "chat": follow-ups answered with
    and without history per policy, "examples": the first 12 prompts' answers}.
    """
    if "sft" not in policies:
        raise ValueError(f"evaluate_policies compares with SFT: pass policies with an 'sft' entry, got {list(policies)}")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1; got {samples_per_prompt}")
    test_prompts = world.prompts("test")
    prompts = test_prompts * samples_per_prompt
    T, L = temperature, max_new_tokens
    samples = {name: sample_answers(m, tokenizer, world, prompts, T, L, seed) for name, m in policies.items()}
    results = {}
    for name, m in policies.items():
        s = samples[name]
        results[name] = {**summarize(s),
                         "win_rate_vs_sft": win_rate(s.gold_totals, samples["sft"].gold_totals),
                         "kl_to_sft": kl_to_reference(m, policies["sft"], s, T),
                         "rm_reward": float(score_responses(reward_model, tokenizer, prompts, s.texts, s.ended).mean()),
                         "pretrain_val_loss": evaluate_loss(m, val_ids, max_batches=4)}
    # each conversation is sampled as often as each test prompt (`prompts` repeats them samples_per_prompt times)
    chat = {name: {f"follow_up_{k}_history": follow_up_accuracy(m, tokenizer, world, prompts, k == "with",
                                                                  max_new_tokens=L, seed=seed)
                   for k in ("with", "without")} for name, m in policies.items()}
    follow_ups = sum(len(world.follow_ups(p)[1]) for p in test_prompts)
    return {"seed": seed, "temperature": T, "max_new_tokens": L, "samples_per_prompt": samples_per_prompt,
            "policies": results,
            "chat": {"follow_ups": follow_ups, "follow_ups_sampled": follow_ups * samples_per_prompt,
                     "by_policy": chat},
            "examples": [{"prompt": p.text, **{name: samples[name].texts[i] for name in policies}}
                         for i, p in enumerate(prompts[:12])]}


@torch.no_grad()
def follow_up_accuracy(model: GPT, tokenizer, world, prompts: list, with_history: bool, temperature: float = 0.7,
                       seed: int = 0, max_new_tokens: int = 24) -> float:
    """Does the chat use its history? The share of follow-up questions answered right.

    Every `context` or `followup` prompt among `prompts` opens a conversation that supplies facts about a NEW
    creature; each follow-up asks a supplied fact that turn 1 did not ask (`world.follow_ups`).
    with_history=True: the model first answers turn 1, then the follow-up comes after [turn 1, its own answer];
    with_history=False: the follow-up alone, where nothing tells the answer (chance: 1/8, one value in eight).
    Right = the supplied fact about the right creature: gold helpful and honest both 1.
    """
    conversations = [world.follow_ups(p) for p in prompts]
    conversations = [(first, questions) for first, questions in conversations if questions]
    if not conversations:
        raise ValueError("no prompt supplies facts about a new creature: pass prompts that include `context` or "
                         "`followup` tasks, e.g. world.prompts('test')")
    if with_history:
        firsts = [first for first, _ in conversations]
        answers = sample_answers(model, tokenizer, world, firsts, temperature=temperature,
                                 max_new_tokens=max_new_tokens, seed=seed).texts
        asked = [replace(q, history=((first.text, answer),))
                 for (first, questions), answer in zip(conversations, answers) for q in questions]
    else:
        asked = [replace(q, history=()) for _, questions in conversations for q in questions]
    samples = sample_answers(model, tokenizer, world, asked, temperature=temperature, max_new_tokens=max_new_tokens,
                             seed=seed + 1)
    return sum(g.helpful == 1.0 and g.honest == 1.0 for g in samples.gold) / len(samples.gold)
