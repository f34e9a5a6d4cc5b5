"""Prompting a pre-trained model: GPT-2's zero-shot and GPT-3's in-context (few-shot) learning, measured.

GPT-2 (Radford et al. 2019) showed that a language model answers tasks it was never trained for when the task is
phrased as text to continue ("zero-shot"). GPT-3 (Brown et al. 2020) showed that putting k solved examples in the
prompt, with no gradient step, raises accuracy ("in-context learning"), more so with more examples.

Both are measured here the way GPT-3 scored multiple-choice tasks: for each candidate answer c, compute
log P(c | prompt) under the model and pick the most likely one. In the text the answer follows a space ("bobo -> red"), and byte-level BPE
folds that space into the token (" red" is one token, "red" another), so candidates are scored as " " + answer.
"""

from __future__ import annotations

import random

import torch

from minirlhf.model import GPT, pad_right, token_logprobs


@torch.no_grad()
def continuation_logprobs(model: GPT, tokenizer, context: str, continuations: list[str]) -> torch.Tensor:
    """log P(continuation | context) for each continuation, summed over its tokens. Returns (len(continuations),)."""
    if not continuations:
        raise ValueError("no continuations to score")
    ctx = tokenizer.encode(context, add_special_tokens=False)
    conts = [tokenizer.encode(c, add_special_tokens=False) for c in continuations]
    if any(len(c) == 0 for c in conts):
        raise ValueError(f"a continuation encodes to no tokens: {continuations!r}")
    longest = len(ctx) + max(len(c) for c in conts)
    if longest > model.config.block_size:
        raise ValueError(f"the prompt plus answer is {longest} tokens but the model's context is "
                         f"{model.config.block_size}; use fewer shots or a larger block_size")
    device = next(model.parameters()).device
    ids, mask = pad_right([ctx + c for c in conts], tokenizer.pad_token_id, model.config.block_size, device)
    model.eval()
    logits, _ = model(ids, attention_mask=mask)                                  # (N, T, V)
    logp = token_logprobs(logits[:, :-1], ids[:, 1:])                            # (N, T-1): log P(u_t | u_<t)
    scores = torch.zeros(len(conts), device=device)
    for i, c in enumerate(conts):
        start = len(ctx) - 1                                                     # position predicting c[0]
        scores[i] = logp[i, start:start + len(c)].sum()
    return scores.cpu()


def choose(model: GPT, tokenizer, context: str, candidates: list[str]) -> int:
    """Index of the candidate the model finds most likely after the context."""
    return int(continuation_logprobs(model, tokenizer, context, candidates).argmax())


def few_shot_accuracy(model: GPT, tokenizer, world, n_shots: int, n_episodes: int = 200, seed: int = 0) -> float:
    """GPT-3 style k-shot accuracy on the world's in-context-learning task (a mapping sampled per episode)."""
    if n_episodes <= 0:
        raise ValueError("n_episodes must be positive")
    rng = random.Random(seed * 1000 + n_shots)
    correct = 0
    for _ in range(n_episodes):
        prompt, answer, candidates = world.icl_episode(rng, n_shots)
        correct += candidates[choose(model, tokenizer, prompt, [" " + c for c in candidates])] == answer
    return correct / n_episodes


def icl_curve(model: GPT, tokenizer, world, shots=(0, 1, 2, 4, 8), n_episodes: int = 200, seed: int = 0) -> dict:
    """Accuracy vs number of in-context examples, plus the accuracy an ideal copier would reach.

    With 4 keys drawn uniformly, the query's own mapping is among k shots with probability 1 − (3/4)^k: a model that
    copies perfectly and guesses otherwise sits near that curve. Chance is 1/len(candidates).
    """
    accuracy = [few_shot_accuracy(model, tokenizer, world, k, n_episodes, seed) for k in shots]
    return {"shots": list(shots), "accuracy": accuracy}


def zero_shot_accuracy(model: GPT, tokenizer, world, kind: str = "home", n_episodes: int = 200, seed: int = 0) -> float:
    """GPT-2 style zero-shot: complete a plain-text statement about the world and check the fact."""
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_episodes):
        prompt, answer, candidates = world.zero_shot_episode(rng, kind)
        correct += candidates[choose(model, tokenizer, prompt, [" " + c for c in candidates])] == answer
    return correct / n_episodes
