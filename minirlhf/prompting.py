"""Prompting a pre-trained model: GPT-2's zero-shot and GPT-3's in-context (few-shot) learning, measured.

GPT-2 (Radford et al. 2019) showed that a language model answers tasks it was never trained for when the task is
phrased as text to continue ("zero-shot"). GPT-3 (Brown et al. 2020) showed that putting k solved examples in the
prompt, with no gradient step, raises accuracy ("in-context learning"), more so with more examples.

GPT-3's gains mix two things, measured apart here: task *learning* (icl_curve: a mapping made up per episode, that
only the shots define) and task *recognition* (icl_task_curve: true facts the model knows; the shots only say which
attribute is asked). Both run on an induction head, which induction_scores finds among the attention heads.

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
    """GPT-3 task LEARNING: accuracy vs number of in-context examples of a mapping made up for each episode.

    Nothing but the shots tells the answer, so the accuracy an ideal copier reaches is the ceiling ("ideal"): with
    K keys drawn uniformly the query's own line is among k shots with probability p = 1 − (1 − 1/K)^k; a copier
    answers those and guesses among the C candidates otherwise: p + (1 − p)/C. Chance is 1/C.
    """
    accuracy = [few_shot_accuracy(model, tokenizer, world, k, n_episodes, seed) for k in shots]
    keys, n_candidates = world.config.pattern_keys, len(world.icl_episode(random.Random(0), 0)[2])
    seen = [1 - (1 - 1 / keys) ** k for k in shots]
    return {"shots": list(shots), "accuracy": accuracy, "ideal": [p + (1 - p) / n_candidates for p in seen]}


def icl_task_curve(model: GPT, tokenizer, world, shots=(0, 1, 2, 4, 8), n_episodes: int = 200,
                   seed: int = 0) -> dict:
    """GPT-3 task RECOGNITION: accuracy vs shots on lists of true facts ('bobo : red\\nkiki : pink\\ndema :').

    A model that knows every fact is right one time in three with 0 shots (which attribute is asked?) and always
    from 1 shot on: the shots do not teach the answer, they say which task it is (world.icl_task_episode).
    """
    if n_episodes <= 0:
        raise ValueError("n_episodes must be positive")
    accuracy = []
    for k in shots:
        rng = random.Random(seed * 1000 + k + 500)
        correct = 0
        for _ in range(n_episodes):
            prompt, answer, candidates = world.icl_task_episode(rng, k)
            correct += candidates[choose(model, tokenizer, prompt, [" " + c for c in candidates])] == answer
        accuracy.append(correct / n_episodes)
    return {"shots": list(shots), "accuracy": accuracy}


def zero_shot_accuracy(model: GPT, tokenizer, world, kind: str = "home", n_episodes: int = 200, seed: int = 0) -> float:
    """GPT-2 style zero-shot: complete a plain-text statement about the world and check the fact."""
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_episodes):
        prompt, answer, candidates = world.zero_shot_episode(rng, kind)
        correct += candidates[choose(model, tokenizer, prompt, [" " + c for c in candidates])] == answer
    return correct / n_episodes


@torch.no_grad()
def induction_scores(model: GPT, length: int = 24, n_sequences: int = 16, seed: int = 0,
                     first_id: int = 4) -> dict:
    """Per layer and head, the attention of two kinds of heads on random token sequences repeated twice [r, r].

    previous_token[l][h]: mean attention from position t to t − 1 (a previous-token head);
    induction[l][h]: mean attention, in the second copy, from position t to the token right after the earlier
    occurrence of u_t, t − length + 1 (an induction head: "what followed this token last time?"). Random tokens
    can only be predicted in the second copy, by copying, so the heads that do it stand out (Olsson et al. 2022).
    first_id: the lowest token id drawn (ids below it are the special tokens).
    """
    if 2 * length > model.config.block_size:
        raise ValueError(f"2 × length = {2 * length} exceeds the model's context of {model.config.block_size}")
    generator = torch.Generator().manual_seed(seed)
    r = torch.randint(first_id, model.config.vocab_size, (n_sequences, length), generator=generator)  # (N, L)
    x = torch.cat([r, r], dim=1).to(next(model.parameters()).device)                                  # (N, 2L)
    patterns = []
    hooks = [block.attn.attn_dropout.register_forward_hook(lambda m, args, out: patterns.append(out))
             for block in model.transformer.h]
    old_impl, was_training = model.attn_impl, model.training
    model.attn_impl = "manual"      # the written-out attention passes its weights through attn_dropout
    model.eval()
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.attn_impl = old_impl
        model.train(was_training)
    t = torch.arange(1, 2 * length)
    second = torch.arange(length, 2 * length)
    previous = [p[:, :, t, t - 1].mean(dim=(0, 2)).tolist() for p in patterns]            # (nh,) per layer
    induction = [p[:, :, second, second - length + 1].mean(dim=(0, 2)).tolist() for p in patterns]
    return {"previous_token": previous, "induction": induction}
