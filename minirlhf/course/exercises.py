"""Exercises: one per notebook from 02 on. The learner writes a function; `check_…` tests it against the package.

Each check runs the learner's function on several seeded random inputs and edge cases, compares it with the
package's own implementation (the reference), and either prints "✓ correct: ..." or raises AssertionError with a
hint. When the answer matches a known mistake (no causal mask, ignored positions averaged in, ...) the hint names
it. Worked solutions live apart, in solutions/ (one file per exercise; see solutions/README.md).

    notebook  check                  the learner writes
    02        check_attention        attention(q, k, v) -> causal softmax attention, (B, nh, T, hs)
    03        check_causal_lm_loss   causal_lm_loss(logits, targets) -> mean NLL, ignoring label -100
    04        check_few_shot_prompt  few_shot_prompt(examples, query_key) -> the "game :" prompt text
    05        check_sft_labels       sft_labels(prompt_ids, response_ids) -> labels (−100 on the prompt)
    06        check_pairwise_loss    pairwise_loss(rewards, rankings) -> −1/C(K,2)·E[log σ(r_w − r_l)]
    07        check_gae              gae_advantages(rewards, values, mask, gamma, lam) -> advantages
    07        check_policy_loss      policy_loss(logp, old_logp, advantages, mask, clip_range) -> clipped loss
    08        check_k3               k3(logp, ref_logp) -> per-token (r − 1) − log r, r = π_SFT/π_RL
    09        check_win_rate         win_rate(scores, baseline) -> fraction of wins, ties count half
    10        check_dpo_loss         dpo_loss(logp_w, logp_l, ref_logp_w, ref_logp_l, beta) -> −mean log σ(β·Δ)
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

EXERCISES = [  # (notebook, check, function the learner writes, solution file)
    ("02", "check_attention", "attention", "solutions/ex02_attention.py"),
    ("03", "check_causal_lm_loss", "causal_lm_loss", "solutions/ex03_causal_lm_loss.py"),
    ("04", "check_few_shot_prompt", "few_shot_prompt", "solutions/ex04_few_shot_prompt.py"),
    ("05", "check_sft_labels", "sft_labels", "solutions/ex05_sft_labels.py"),
    ("06", "check_pairwise_loss", "pairwise_loss", "solutions/ex06_pairwise_loss.py"),
    ("07", "check_gae", "gae_advantages", "solutions/ex07_gae.py"),
    ("07", "check_policy_loss", "policy_loss", "solutions/ex07_policy_loss.py"),
    ("08", "check_k3", "k3", "solutions/ex08_k3.py"),
    ("09", "check_win_rate", "win_rate", "solutions/ex09_win_rate.py"),
    ("10", "check_dpo_loss", "dpo_loss", "solutions/ex10_dpo_loss.py"),
]


# ------------------------------------------------------------------------------------------------------------------
# Shared comparison helpers


def _call(fn, case: str, *args):
    """Call the learner's function on copies of the inputs; its own exceptions become a readable failure."""
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any error in the learner's code is a failed check
        raise AssertionError(f"your function raised {type(e).__name__}: {e}\n  on {case}") from e


def _as_tensor(x, what: str, case: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    try:
        return torch.as_tensor(x, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"your function returned a {type(x).__name__} for {case}; "
                             f"it should return {what}") from None


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def _fmt(x: torch.Tensor) -> str:
    return f"{x.item():.4g}" if x.numel() == 1 else f"a {tuple(x.shape)} tensor"


def _compare(got, expected: torch.Tensor, what: str, case: str, mistakes=(), default_hint: str = "",
             atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Raise AssertionError unless got ≈ expected; the hint names the first known mistake that got matches.

    mistakes: (candidate output of a typical wrong answer, hint) pairs.
    """
    got = _as_tensor(got, what, case)
    expected = expected.detach().float()
    if got.numel() == 1 and expected.numel() == 1:
        got, expected = got.reshape(()), expected.reshape(())
    if got.shape != expected.shape:
        raise AssertionError(f"your {what} has shape {tuple(got.shape)} but the reference has shape "
                             f"{tuple(expected.shape)} for {case}")
    if _close(got, expected, atol, rtol):
        return
    hint = next((h for candidate, h in mistakes if _close(got, candidate.detach().float(), atol, rtol)), default_hint)
    if got.numel() == 1:
        msg = f"your {what} is {_fmt(got)} but the reference is {_fmt(expected)} for {case}"
    else:
        diff = (got - expected).abs().nan_to_num(nan=float("inf"))
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        msg = (f"your {what} differs from the reference by up to {diff.max().item():.3g} for {case} "
               f"(at index {where}: yours {got[where].item():.4g}, reference {expected[where].item():.4g})")
    raise AssertionError(msg + (f"; {hint}" if hint else ""))


def _ok(message: str) -> None:
    print(f"✓ correct: {message}")


# ------------------------------------------------------------------------------------------------------------------
# 02  attention


def _attention_cases():
    shapes = [(2, 2, 5, 8), (1, 4, 16, 16), (3, 1, 7, 4), (1, 1, 1, 4), (2, 2, 12, 8)]
    for i, (B, nh, T, hs) in enumerate(shapes):
        g = torch.Generator().manual_seed(100 + i)
        scale = 3.0 if i == len(shapes) - 1 else 1.0  # large scores: the softmax must stay numerically stable
        q, k, v = (torch.randn(B, nh, T, hs, generator=g) * scale for _ in range(3))
        yield f"q, k, v of shape (B, nh, T, hs) = {(B, nh, T, hs)}" + (" with large values" if scale > 1 else ""), q, k, v


def check_attention(fn) -> None:
    """fn(q, k, v) -> softmax(q·kᵀ/√hs with the future masked)·v, shape (B, nh, T, hs)."""
    for case, q, k, v in _attention_cases():
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        mistakes = [
            (F.scaled_dot_product_attention(q, k, v), "it looks like attention WITHOUT the causal mask: position t "
             "must not see positions > t (mask the scores with -inf above the diagonal before the softmax)"),
            (F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0), "it looks like the scores are not "
             "scaled: divide q·kᵀ by √hs (hs = q.size(-1))"),
            (F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / q.size(-1)), "the scores are "
             "divided by hs; divide by √hs instead"),
        ]
        T = q.size(2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        mistakes.append((torch.softmax(scores.masked_fill(future, float("-inf")), dim=-2).nan_to_num() @ v,
                         "the softmax runs over the wrong axis: normalise over the keys (dim=-1), so each query's "
                         "weights sum to 1"))
        _compare(_call(fn, case, q, k, v), expected, "attention output", case, mistakes,
                 "compare each step with: scores = q @ kᵀ / √hs; mask j > t with -inf; softmax(dim=-1); @ v")
    _ok("causal attention matches F.scaled_dot_product_attention(q, k, v, is_causal=True) on 5 inputs, "
        "including T = 1 and large scores")


# ------------------------------------------------------------------------------------------------------------------
# 03  causal language-modelling loss


def _lm_loss_cases():
    specs = [  # (B, T, V, fraction of targets set to -100, note)
        (2, 6, 11, 0.0, "no ignored targets"),
        (3, 8, 17, 0.4, "some targets = -100"),
        (1, 5, 7, 0.0, "a single row"),
        (4, 6, 13, 0.5, "many targets = -100 and one row fully ignored"),
    ]
    for i, (B, T, V, frac, note) in enumerate(specs):
        g = torch.Generator().manual_seed(300 + i)
        logits = torch.randn(B, T, V, generator=g) * 2
        targets = torch.randint(0, V, (B, T), generator=g)
        targets[torch.rand(B, T, generator=g) < frac] = -100
        if i == 3:
            targets[0] = -100
            targets[1, 0] = 3  # at least one real target
        yield f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} ({note})", logits, targets


def check_causal_lm_loss(fn) -> None:
    """fn(logits (B,T,V), targets (B,T)) -> mean −log P(target) over the targets that are not −100."""
    from minirlhf.pretrain import causal_lm_loss

    for case, logits, targets in _lm_loss_cases():
        expected = causal_lm_loss(logits, targets)
        mask = targets != -100
        nll = -F.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # (B, T)
        mistakes = [
            (nll.sum() / targets.numel(), "it looks like you averaged over ALL positions; divide by the number of "
             "targets that are not -100 (did you forget to ignore the prompt/padding positions, label -100?)"),
            (nll.sum(), "it looks like a SUM over tokens; the loss is the MEAN over the predicted tokens"),
            (F.cross_entropy(logits.flatten(0, 1), targets.clamp(min=0).flatten()), "the positions with target -100 "
             "were scored (as token 0?); leave them out of both the sum and the count"),
            (F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets[:, 1:].reshape(-1)),
             "targets are already shifted (targets[:, t] is the token after position t); do not shift them again"),
        ]
        if mask.all():
            mistakes.append((-(logits.gather(-1, targets.unsqueeze(-1))).mean(), "take log_softmax of the logits "
                             "first: the loss is −log P(target), not −logit(target)"))
        _compare(_call(fn, case, logits, targets), expected, "loss", case, mistakes,
                 "the loss is −mean over non-ignored positions of log_softmax(logits)[target]")
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(7), requires_grad=True)
    loss = _call(fn, "logits that require grad", logits, torch.randint(0, 9, (2, 4)))
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        raise AssertionError("your loss carries no gradient: return a tensor computed from the logits "
                             "(no .item(), no .detach(), no numpy), or the model cannot learn from it")
    _ok("causal_lm_loss matches minirlhf.pretrain.causal_lm_loss on 4 inputs (with -100 targets, a fully ignored "
        "row) and keeps its gradient")


# ------------------------------------------------------------------------------------------------------------------
# 04  the few-shot prompt (GPT-3 in-context learning)


def parse_episode(prompt_text: str) -> tuple[list[tuple[str, str]], str]:
    """Split a world ICL prompt ('game :\\nbobo red\\n...\\nkiki') into its examples and the query key."""
    lines = prompt_text.split("\n")
    examples = [tuple(line.split(" ")) for line in lines[1:-1]]
    return examples, lines[-1]


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_few_shot_prompt(fn, world=None) -> None:
    """fn(examples: list[(key, value)], query_key) -> the prompt exactly as world.icl_episode writes it."""
    from minirlhf.world import PATTERN_HEADER, default_world

    world = world or default_world()
    for i, n_shots in enumerate((3, 1, 0, 8, 5)):
        expected, answer, _ = world.icl_episode(random.Random(400 + i), n_shots)
        examples, query = parse_episode(expected)
        case = f"examples={examples}, query_key={query!r}"
        got = _call(fn, case, [tuple(e) for e in examples], query)
        if not isinstance(got, str):
            raise AssertionError(f"your function returned a {type(got).__name__}; it should return the prompt string")
        if got == expected:
            continue
        at = _first_difference(got, expected)
        if not got.startswith(PATTERN_HEADER):
            hint = f"the prompt starts with the header {PATTERN_HEADER!r} on its own line"
        elif got.rstrip() == expected and got != expected:
            hint = (f"remove the trailing whitespace: the prompt ends with '{query}' and the model continues with "
                    f"' {answer}' (the space belongs to the answer's token)")
        elif got == expected + " " + answer:
            hint = "the prompt must stop at the query key: the answer is what the model should write"
        elif "->" in got or ":" in got.replace(PATTERN_HEADER, ""):
            hint = "each example line is 'key value': the key, one space, the value (no arrow or colon)"
        else:
            hint = "one line per example, 'key value', joined by '\\n', then the query key alone on the last line"
        raise AssertionError(f"your prompt differs from the world's at character {at}: yours {got[at:at + 20]!r} "
                             f"vs expected {expected[at:at + 20]!r}\n  expected: {expected!r}\n  yours:    {got!r}\n"
                             f"  for {case}; {hint}")
    _ok("few_shot_prompt reproduces world.icl_episode's prompt exactly for 0, 1, 3, 5 and 8 shots")


# ------------------------------------------------------------------------------------------------------------------
# 05  SFT labels


class _FixedTokenizer:
    """Stands in for a tokenizer so sft.sft_example itself gives the reference labels for given ids."""

    def __init__(self, prompt_ids: list[int], body_ids: list[int], eos_id: int):
        self.prompt_ids, self.body_ids, self.eos_token_id = prompt_ids, body_ids, eos_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        from minirlhf.tokenizer import USER

        return list(self.prompt_ids if text.startswith(USER) else self.body_ids)


def _reference_sft_labels(prompt_ids: list[int], body_ids: list[int], ended: bool, eos_id: int = 0):
    from minirlhf.sft import sft_example

    ids, labels = sft_example(_FixedTokenizer(prompt_ids, body_ids, eos_id), "prompt", "response", ended)
    return ids, labels


def check_sft_labels(fn) -> None:
    """fn(prompt_ids, response_ids) -> labels, one per input token of prompt_ids + response_ids.

    response_ids already end with EOS when the answer ended; labels[t] = ids[t + 1] where ids[t + 1] is a response
    token, −100 elsewhere (sft.sft_example's convention).
    """
    rng = random.Random(500)
    cases = [(rng.randint(3, 9), rng.randint(2, 8), True) for _ in range(3)]
    cases += [(6, 5, False), (2, 1, True), (4, 0, True)]  # unended answer; the shortest prompt; an answer of only EOS
    for n_prompt, n_body, ended in cases:
        prompt_ids = [rng.randint(4, 299) for _ in range(n_prompt)]
        body_ids = [rng.randint(4, 299) for _ in range(n_body)]
        ids, expected = _reference_sft_labels(prompt_ids, body_ids, ended)
        response_ids = ids[len(prompt_ids):]
        case = f"prompt_ids={prompt_ids}, response_ids={response_ids}"
        got = _call(fn, case, list(prompt_ids), list(response_ids))
        got = got.tolist() if isinstance(got, torch.Tensor) else got
        try:
            got = [int(x) for x in got]
        except (TypeError, ValueError):
            raise AssertionError(f"your function returned {got!r}; it should return a list of ints") from None
        if got == expected:
            continue
        if len(got) != len(ids):
            hint = (f"give one label per input token: {len(ids)} = {len(prompt_ids)} prompt + "
                    f"{len(response_ids)} response tokens (you returned {len(got)})")
        elif got == [-100] * len(prompt_ids) + response_ids:
            hint = ("labels are not shifted: labels[t] is the token at t + 1, so the LAST prompt position predicts the "
                    "first response token, and the last position (nothing after it) is -100")
        elif got[:len(prompt_ids) - 1] != expected[:len(prompt_ids) - 1]:
            hint = "the prompt's tokens are context, not targets: their labels are -100"
        else:
            hint = "labels[t] = ids[t + 1] where ids[t + 1] is a response token (EOS included), else -100"
        raise AssertionError(f"your labels are {got} but the reference is {expected} for {case}; {hint}")
    _ok("sft_labels matches minirlhf.sft.sft_example on 6 examples, including an unended answer and an EOS-only answer")


# ------------------------------------------------------------------------------------------------------------------
# 06  the reward model's pairwise loss


def _pairwise_cases():
    for i, (N, K) in enumerate([(4, 4), (1, 2), (3, 9), (6, 5)]):
        g = torch.Generator().manual_seed(600 + i)
        rewards = torch.randn(N, K, generator=g) * 1.5
        rankings = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
        yield f"rewards {tuple(rewards.shape)} (N, K={K}), rankings {tuple(rankings.shape)}", rewards, rankings
    rewards = torch.tensor([[200.0, 0.0, -1.0], [0.0, 1.0, 2.0]])  # the labeler's favourite scored 200 below
    yield "rewards with a gap of 200 (log σ must not underflow)", rewards, torch.tensor([[1, 2, 0], [2, 1, 0]])


def check_pairwise_loss(fn) -> None:
    """fn(rewards (N,K), rankings (N,K) best first) -> −1/C(K,2) · Σ_pairs log σ(r_w − r_l), averaged over prompts."""
    from minirlhf.reward import pairwise_loss

    for case, rewards, rankings in _pairwise_cases():
        expected = pairwise_loss(rewards, rankings)[0]
        N, K = rewards.shape
        flipped = pairwise_loss(rewards, rankings.flip(1))[0]
        adjacent = torch.stack([-F.logsigmoid(rewards.gather(1, rankings[:, j:j + 1]) -
                                              rewards.gather(1, rankings[:, j + 1:j + 2])).mean()
                                for j in range(K - 1)]).mean()
        mistakes = [
            (flipped, "the sign of r_w − r_l is flipped: rankings[n, 0] is the BEST response (the winner of all its "
             "pairs), so the loss is −log σ(r_best − r_other)"),
            (expected * K * (K - 1) / 2, "it looks like a sum over pairs; divide by C(K, 2) = K·(K−1)/2 (the seed "
             "lecture's −1/C(K,2) factor), so each prompt counts once whatever its K"),
            (adjacent, "use ALL C(K,2) pairs (i ranked above j for every i < j), not only neighbours in the ranking"),
        ]
        got = _call(fn, case, rewards, rankings)
        if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
            raise AssertionError(f"your loss is {_fmt(got.detach())} for {case}; log(sigmoid(x)) underflows for "
                                 "large gaps: use F.logsigmoid(r_w - r_l)")
        _compare(got, expected, "loss", case, mistakes,
                 "loss = −mean over prompts of the mean over the C(K,2) pairs of log σ(r_w − r_l)")
    _ok("pairwise_loss matches minirlhf.reward.pairwise_loss for K = 2, 3, 4, 5, 9 and a reward gap of 200")


# ------------------------------------------------------------------------------------------------------------------
# 07  GAE and PPO's clipped policy loss


def _response_mask(lengths: list[int], R: int) -> torch.Tensor:
    return (torch.arange(R)[None, :] < torch.tensor(lengths)[:, None]).float()  # (B, R) ones, then zeros


def _ppo_cases():
    specs = [  # (lengths of the responses, R, gamma, lam)
        ([5, 5, 5], 5, 1.0, 0.95),
        ([6, 3, 1, 4], 6, 1.0, 0.95),
        ([4, 2], 4, 0.9, 1.0),
        ([3, 5], 5, 0.99, 0.0),
        ([1], 1, 1.0, 0.95),
    ]
    for i, (lengths, R, gamma, lam) in enumerate(specs):
        g = torch.Generator().manual_seed(700 + i)
        mask = _response_mask(lengths, R)
        rewards = torch.randn(len(lengths), R, generator=g) * mask
        values = torch.randn(len(lengths), R, generator=g)  # garbage at padding: it must be ignored
        yield (f"rewards/values/mask {tuple(mask.shape)}, response lengths {lengths}, gamma={gamma}, lam={lam}",
               rewards, values, mask, gamma, lam)


def _gae_without_mask(rewards, values, gamma, lam):
    advantages, next_value, next_adv = torch.zeros_like(values), torch.zeros_like(values[:, 0]), 0.0
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        next_value = values[:, t]
        advantages[:, t] = next_adv
    return advantages


def check_gae(fn) -> None:
    """fn(rewards, values, mask, gamma, lam) -> advantages (B, R): A_t = δ_t + γλ·A_{t+1}, 0 at padding."""
    from minirlhf.ppo import gae_advantages

    for case, rewards, values, mask, gamma, lam in _ppo_cases():
        expected = gae_advantages(rewards, values, mask, gamma, lam)[0]
        mistakes = [
            (_gae_without_mask(rewards, values, gamma, lam) * mask, "the episode ends at the last real token: there "
             "V(s_{t+1}) = 0 and nothing flows back from the padding (multiply values and advantages by the mask)"),
            (_gae_without_mask(rewards, values, gamma, lam), "padding positions must get advantage 0 and must not "
             "feed V(s_{t+1}) or A_{t+1} into the real tokens: use the mask"),
        ]
        if 0 < gamma < 1:  # forgot γ in the recursion: A_t = δ_t + λ·A_{t+1} is GAE with λ' = λ/γ
            mistakes.append((gae_advantages(rewards, values, mask, gamma, lam / gamma)[0], "the recursion is "
                             "A_t = δ_t + γ·λ·A_{t+1}: γ appears there too, not only in δ_t"))
        if lam != 1:  # forgot λ: A_t = δ_t + γ·A_{t+1} is GAE with λ = 1
            mistakes.append((gae_advantages(rewards, values, mask, gamma, 1.0)[0], "the recursion is "
                             "A_t = δ_t + γ·λ·A_{t+1}: did you forget λ?"))
        _compare(_call(fn, case, rewards, values, mask, gamma, lam), expected, "advantages", case, mistakes,
                 "run t backwards: δ_t = r_t + γ·V(s_{t+1}) − V(s_t), A_t = δ_t + γλ·A_{t+1}, with V and A = 0 "
                 "after the last real token")
    _ok("gae_advantages matches minirlhf.ppo.gae_advantages on 5 batches (padding, γ < 1, λ = 0 and 1, R = 1)")


def _policy_cases():
    for i, (lengths, R, clip, spread) in enumerate([([4, 4], 4, 0.2, 0.1), ([5, 2, 3], 5, 0.2, 0.5),
                                                    ([6, 1], 6, 0.1, 1.0), ([3], 3, 0.3, 0.0)]):
        g = torch.Generator().manual_seed(750 + i)
        mask = _response_mask(lengths, R)
        old_logp = -torch.rand(len(lengths), R, generator=g) * 3
        logp = old_logp + torch.randn(len(lengths), R, generator=g) * spread  # ratio = exp(logp − old_logp)
        advantages = torch.randn(len(lengths), R, generator=g)
        note = "ratio exactly 1" if spread == 0 else f"log-ratios of spread {spread}"
        yield (f"logp/old_logp/advantages/mask {tuple(mask.shape)}, lengths {lengths}, clip_range={clip} ({note})",
               logp, old_logp, advantages, mask, clip)


def check_policy_loss(fn) -> None:
    """fn(logp, old_logp, advantages, mask, clip_range) -> −mean_t min(ratio·A, clip(ratio, 1±ε)·A) over real tokens."""
    from minirlhf.ppo import masked_mean, policy_loss

    for case, logp, old_logp, adv, mask, clip in _policy_cases():
        expected = policy_loss(logp, old_logp, adv, mask, clip)[0]
        ratio = torch.exp(logp - old_logp)
        unclipped, clipped = -adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)
        mistakes = [
            (masked_mean(torch.min(unclipped, clipped), mask), "PPO is pessimistic: take the MIN of the two "
             "objectives ratio·A and clip(ratio)·A, i.e. the MAX of the two losses"),
            (masked_mean(unclipped, mask), "the ratio is not clipped: clip it to [1 − ε, 1 + ε] for the second term"),
            (torch.max(unclipped, clipped).mean(), "average over the real tokens only (mask == 1), not the padding"),
            (-expected, "the sign is flipped: return the loss to MINIMISE, −min(ratio·A, clip(ratio)·A)"),
            (masked_mean(torch.max(-adv * (logp - old_logp), -adv * (logp - old_logp).clamp(-clip, clip)), mask),
             "the ratio is π/π_old = exp(logp − old_logp), not the log-ratio itself"),
        ]
        _compare(_call(fn, case, logp, old_logp, adv, mask, clip), expected, "loss", case, mistakes,
                 "ratio = exp(logp − old_logp); loss = masked mean of max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε))")
    logp = torch.randn(2, 3, generator=torch.Generator().manual_seed(8), requires_grad=True)
    loss = _call(fn, "logp that requires grad", logp, logp.detach() + 0.05, torch.ones(2, 3), torch.ones(2, 3), 0.2)
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        raise AssertionError("your loss carries no gradient w.r.t. logp: compute it from logp with torch ops "
                             "(no .item(), .detach() or numpy)")
    _ok("policy_loss matches minirlhf.ppo.policy_loss on 4 batches (padding, clipping active and not) and keeps its "
        "gradient")


# ------------------------------------------------------------------------------------------------------------------
# 08  the k3 KL estimator


def reference_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 = (r − 1) − log r with r = π_SFT/π_RL, written exactly as ppo.kl_estimators sums it."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def check_k3(fn) -> None:
    """fn(logp, ref_logp) -> per-token (r − 1) − log r, r = π_SFT(y_t)/π_RL(y_t); same shape, never negative."""
    from minirlhf.ppo import kl_estimators

    specs = [((3, 5), 0.3), ((2, 8), 1.5), ((1, 1), 0.5), ((4, 6), 0.0)]  # (shape, spread of the log-ratio)
    for i, (shape, spread) in enumerate(specs):
        g = torch.Generator().manual_seed(800 + i)
        logp = -torch.rand(shape, generator=g) * 4
        ref_logp = logp + torch.randn(shape, generator=g) * spread
        case = f"logp/ref_logp {shape}" + (" (π_RL = π_SFT: every k3 must be 0)" if spread == 0 else "")
        expected = reference_k3(logp, ref_logp)
        # the reference agrees with the package: summed over tokens and averaged over rows it is kl_estimators' k3
        assert torch.allclose(expected.sum(1).mean(), kl_estimators(logp, ref_logp, torch.ones(shape))[1], atol=1e-5)
        got = _call(fn, case, logp, ref_logp)
        got_t = _as_tensor(got, "a tensor of per-token KL estimates", case)
        if got_t.shape == expected.shape and (got_t < -1e-6).any():
            raise AssertionError(f"your k3 has negative values (min {got_t.min().item():.3g}) for {case}; k3 = "
                                 "(r − 1) − log r is never negative because log r ≤ r − 1. Is this k1 = log(π_RL/π_SFT)?")
        log_r = ref_logp - logp
        mistakes = [
            (reference_k3(ref_logp, logp), "r is inverted: r = π_SFT/π_RL = exp(ref_logp − logp), the ratio that "
             "makes k3 an unbiased estimate of KL(π_RL ‖ π_SFT) for tokens sampled from π_RL"),
            (0.5 * log_r**2, "this is k2 = ½(log r)²; k3 is (r − 1) − log r"),
            (expected.sum(1), "return one estimate PER TOKEN (same shape as logp), not a sum per sequence"),
        ]
        _compare(got, expected, "k3", case, mistakes, "k3 = (r − 1) − log r, with log r = ref_logp − logp")
    _ok("k3 matches (r − 1) − log r (and ppo.kl_estimators' k3 when summed) on 4 inputs, and is never negative")


# ------------------------------------------------------------------------------------------------------------------
# 09  win rate


def check_win_rate(fn) -> None:
    """fn(scores, baseline) -> fraction of prompts where scores beats baseline; ties count half."""
    from minirlhf.evaluate import win_rate

    rng = random.Random(900)
    cases = [
        ("30 random scores", [rng.random() for _ in range(30)], [rng.random() for _ in range(30)]),
        ("scores with many ties (rounded to 0.5)", [round(rng.random() * 2) / 2 for _ in range(25)],
         [round(rng.random() * 2) / 2 for _ in range(25)]),
        ("all ties", [0.5] * 6, [0.5] * 6),
        ("one prompt, a win", [0.9], [0.1]),
        ("all losses", [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]),
    ]
    for note, scores, baseline in cases:
        case = f"{note}: scores={scores[:6]}{'...' if len(scores) > 6 else ''}"
        expected = win_rate(scores, baseline)
        wins = sum(a > b for a, b in zip(scores, baseline)) / len(scores)
        ties = sum(a == b for a, b in zip(scores, baseline)) / len(scores)
        mistakes = [(torch.tensor(wins), "ties count HALF a win (and half a loss); you counted them as losses"),
                    (torch.tensor(wins + ties), "ties count HALF a win; you counted them as full wins"),
                    (torch.tensor(wins * len(scores)), "return a FRACTION of the prompts, not the number of wins")]
        _compare(_call(fn, case, list(scores), list(baseline)), torch.tensor(expected), "win rate", case, mistakes,
                 "win rate = (wins + ½·ties) / number of prompts")
    _ok("win_rate matches minirlhf.evaluate.win_rate on 5 inputs (ties, all ties, a single prompt, all losses)")


# ------------------------------------------------------------------------------------------------------------------
# 10  the DPO loss


def reference_dpo_loss(logp_w, logp_l, ref_logp_w, ref_logp_l, beta: float) -> torch.Tensor:
    """The package's DPO loss (dpo.dpo_loss) on B pairs, each a prompt with K = 2 answers, the winner first."""
    from minirlhf.dpo import dpo_loss

    logp, ref_logp = torch.stack([logp_w, logp_l], dim=1), torch.stack([ref_logp_w, ref_logp_l], dim=1)   # (B, 2)
    rankings = torch.tensor([[0, 1]]).expand(len(logp_w), 2)                                           # y_w first
    return dpo_loss(logp, ref_logp, rankings, beta)[0]


def _dpo_cases():
    for i, (B, beta, spread) in enumerate([(6, 0.1, 3.0), (1, 0.5, 2.0), (16, 2.0, 1.0), (5, 0.1, 0.0)]):
        g = torch.Generator().manual_seed(1000 + i)
        ref_w, ref_l = (-torch.rand(B, generator=g) * 20 - 2 for _ in range(2))   # summed log-probs of answers
        logp_w, logp_l = (ref + torch.randn(B, generator=g) * spread for ref in (ref_w, ref_l))
        note = "π = π_ref: the loss must be log 2" if spread == 0 else f"log-ratios of spread {spread}"
        yield f"B = {B} pairs, beta = {beta} ({note})", (logp_w, logp_l, ref_w, ref_l), beta
    logp_w, logp_l = torch.tensor([-400.0, -3.0]), torch.tensor([-2.0, -3.5])   # the winner made 398 nats less likely
    yield "a gap of 199 in β·Δ (log σ must not underflow)", (logp_w, logp_l, torch.full((2,), -3.0),
                                                               torch.full((2,), -3.0)), 0.5


def check_dpo_loss(fn) -> None:
    """fn(logp_w, logp_l, ref_logp_w, ref_logp_l, beta), each (B,) log π(y|x) summed over an answer's tokens ->
    −mean_pairs log σ(β·[(logp_w − ref_logp_w) − (logp_l − ref_logp_l)]), a scalar."""
    for case, (lw, ll, rw, rl), beta in _dpo_cases():
        expected = reference_dpo_loss(lw, ll, rw, rl, beta)
        margin = (lw - rw) - (ll - rl)   # (B,) log-ratio of the winner minus the loser's
        mistakes = [
            (-F.logsigmoid(-beta * margin).mean(), "the sign is flipped: the implicit reward is β·log(π/π_ref) = "
             "β·(logp − ref_logp), the POLICY minus the reference, and the loss is −log σ(r̂_w − r̂_l), winner minus "
             "loser"),
            (-F.logsigmoid(beta * (lw - ll)).mean(), "the reference model is missing: DPO compares log-RATIOS "
             "log π(y|x) − log π_ref(y|x), not the policy's log-probs alone (Z(x) cancels, π_ref does not)"),
            (-F.logsigmoid(margin).mean(), "β is missing: the implicit reward is β·log(π/π_ref), so multiply the "
             "margin by β inside the sigmoid"),
            (-beta * F.logsigmoid(margin).mean(), "β belongs INSIDE the sigmoid: −log σ(β·Δ), not −β·log σ(Δ)"),
            (-F.logsigmoid(beta * margin).sum(), "it looks like a SUM over pairs; the loss is the MEAN over pairs"),
            (-F.logsigmoid(beta * ((lw - rw).exp() - (ll - rl).exp())).mean(), "the implicit reward uses the LOG "
             "ratio β·(logp − ref_logp), not the ratio π/π_ref itself"),
        ]
        got = _call(fn, case, lw, ll, rw, rl, beta)
        if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
            raise AssertionError(f"your loss is {_fmt(got.detach())} for {case}; log(sigmoid(x)) underflows for "
                                 "large margins: use F.logsigmoid(beta * margin)")
        if isinstance(got, torch.Tensor) and got.numel() == len(lw) > 1:
            raise AssertionError(f"your loss has shape {tuple(got.shape)}, one value per pair, for {case}; return one "
                                 "number: the mean over the pairs")
        _compare(got, expected, "loss", case, mistakes,
                 "loss = −mean over pairs of log σ(β·[(logp_w − ref_logp_w) − (logp_l − ref_logp_l)])")
    lw = torch.tensor([-5.0, -7.0], requires_grad=True)
    loss = _call(fn, "logp_w that requires grad", lw, torch.tensor([-6.0, -6.0]), torch.tensor([-5.5, -6.5]),
                 torch.tensor([-6.0, -6.0]), 0.1)
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        raise AssertionError("your loss carries no gradient w.r.t. the policy's log-probs: compute it with torch ops "
                             "(no .item(), .detach() or numpy), or the policy cannot learn from it")
    _ok("dpo_loss matches minirlhf.dpo.dpo_loss (K = 2) on 5 batches, including π = π_ref (log 2) and a margin of "
        "199, and keeps its gradient")


__all__ = ["EXERCISES", "check_attention", "check_causal_lm_loss", "check_few_shot_prompt", "check_sft_labels",
           "check_pairwise_loss", "check_gae", "check_policy_loss", "check_k3", "check_win_rate", "check_dpo_loss",
           "parse_episode", "reference_dpo_loss", "reference_k3"]
