"""Every exercise check passes the worked solution and rejects a typical wrong answer with a hint that names it."""

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minirlhf.course import exercises as ex

ROOT = Path(__file__).resolve().parents[1]


def solution(path: str):
    """The function defined by a solutions/ file (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("notebook, check, name, path", ex.EXERCISES, ids=[e[1] for e in ex.EXERCISES])
def test_check_passes_the_solution(notebook, check, name, path, capsys):
    getattr(ex, check)(getattr(solution(path), name))
    assert capsys.readouterr().out.startswith("✓ correct:")


@pytest.mark.parametrize("path", [e[3] for e in ex.EXERCISES])
def test_solutions_are_written_from_scratch_and_listed(path):
    tree = ast.parse((ROOT / path).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "minirlhf" not in imported, f"{path} must implement the exercise itself, not call the package"
    assert Path(path).name in (ROOT / "solutions" / "README.md").read_text()


def fails_with(check, fn, *hints):
    with pytest.raises(AssertionError) as info:
        check(fn)
    for hint in hints:
        assert hint in str(info.value), str(info.value)
    return str(info.value)


def test_learner_exceptions_become_readable_failures():
    def broken(q, k, v):
        raise NotImplementedError("TODO")

    fails_with(ex.check_attention, broken, "raised NotImplementedError: TODO", "on q, k, v of shape")


# ---- 02 attention -------------------------------------------------------------------------------------------------


def attention_scaled_by(scale_of_hs, causal=True, dim=-1):
    def attention(q, k, v):
        T = q.size(-2)
        scores = q @ k.transpose(-2, -1) * scale_of_hs(q.size(-1))
        if causal:
            scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        return torch.softmax(scores, dim=dim).nan_to_num() @ v

    return attention


def test_check_attention_names_the_mistake():
    fails_with(ex.check_attention, attention_scaled_by(lambda hs: hs**-0.5, causal=False), "WITHOUT the causal mask")
    fails_with(ex.check_attention, attention_scaled_by(lambda hs: 1.0), "not scaled", "differs from the reference by up to")
    fails_with(ex.check_attention, attention_scaled_by(lambda hs: hs**-0.5, dim=-2), "wrong axis")
    fails_with(ex.check_attention, lambda q, k, v: v[..., :1], "shape")


# ---- 03 causal LM loss --------------------------------------------------------------------------------------------


def nll_per_position(logits, targets):
    mask = targets != -100
    return -F.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask


def test_check_causal_lm_loss_names_the_mistake():
    msg = fails_with(ex.check_causal_lm_loss, lambda lg, t: nll_per_position(lg, t).mean(),
                     "forget to ignore the prompt/padding positions, label -100")
    assert "your loss is" in msg and "but the reference is" in msg
    fails_with(ex.check_causal_lm_loss, lambda lg, t: nll_per_position(lg, t).sum(), "SUM over tokens")
    clamped = lambda lg, t: F.cross_entropy(lg.flatten(0, 1), t.clamp(min=0).flatten())
    fails_with(ex.check_causal_lm_loss, clamped, "were scored (as token 0?)")
    detached = lambda lg, t: torch.tensor(F.cross_entropy(lg.flatten(0, 1), t.flatten()).item())
    fails_with(ex.check_causal_lm_loss, detached, "no gradient")


# ---- 04 few-shot prompt -------------------------------------------------------------------------------------------


def few_shot(examples, query_key, header="game :", end="", sep=" "):
    return "\n".join([header] + [f"{k}{sep}{v}" for k, v in examples] + [query_key + end])


def test_check_few_shot_prompt_names_the_mistake():
    fails_with(ex.check_few_shot_prompt, lambda e, q: few_shot(e, q, end=" "), "trailing whitespace")
    fails_with(ex.check_few_shot_prompt, lambda e, q: few_shot(e, q, header="game:"), "header")
    fails_with(ex.check_few_shot_prompt, lambda e, q: few_shot(e, q, sep=" -> "), "no arrow")


def test_parse_episode_inverts_the_world_format():
    assert ex.parse_episode("game :\nbobo red\nkiki blue\nbobo") == ([("bobo", "red"), ("kiki", "blue")], "bobo")
    assert ex.parse_episode("game :\nkiki") == ([], "kiki")


# ---- 05 SFT labels ------------------------------------------------------------------------------------------------


def test_check_sft_labels_names_the_mistake():
    fails_with(ex.check_sft_labels, lambda p, r: [-100] * len(p) + list(r), "labels are not shifted")
    fails_with(ex.check_sft_labels, lambda p, r: [-100] * (len(p) - 1) + list(r), "one label per input token")
    fails_with(ex.check_sft_labels, lambda p, r: list(p[1:]) + list(r) + [-100], "context, not targets")


def test_sft_reference_is_the_package_convention():
    ids, labels = ex._reference_sft_labels([10, 11, 12], [20, 21], ended=True, eos_id=0)
    assert ids == [10, 11, 12, 20, 21, 0]
    assert labels == [-100, -100, 20, 21, 0, -100]  # by hand: position t predicts ids[t + 1]


# ---- 06 pairwise loss ---------------------------------------------------------------------------------------------


def pairwise(rewards, rankings, sign=1.0, reduce_pairs="mean", logsig=F.logsigmoid):
    N, K = rewards.shape
    out = []
    for n in range(N):
        terms = torch.stack([logsig(sign * (rewards[n, rankings[n, i]] - rewards[n, rankings[n, j]]))
                             for i in range(K) for j in range(i + 1, K)])
        out.append(terms.mean() if reduce_pairs == "mean" else terms.sum())
    return -torch.stack(out).mean()


def test_check_pairwise_loss_names_the_mistake():
    fails_with(ex.check_pairwise_loss, lambda r, k: pairwise(r, k, sign=-1.0), "flipped")
    fails_with(ex.check_pairwise_loss, lambda r, k: pairwise(r, k, reduce_pairs="sum"), "C(K, 2)")
    naive = lambda r, k: pairwise(r, k, logsig=lambda x: torch.log(torch.sigmoid(x)))
    fails_with(ex.check_pairwise_loss, naive, "F.logsigmoid")


# ---- 07 GAE and policy loss ---------------------------------------------------------------------------------------


def slow_gae(rewards, values, mask, gamma, lam, use_mask=True, gamma_in_recursion=True):
    adv = torch.zeros_like(values)
    for b in range(values.shape[0]):
        running, next_value = 0.0, 0.0
        for t in reversed(range(values.shape[1])):
            if use_mask and mask[b, t] == 0:
                continue
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + (gamma if gamma_in_recursion else 1.0) * lam * running
            adv[b, t], next_value = running, values[b, t]
    return adv


def test_check_gae_names_the_mistake():
    fails_with(ex.check_gae, lambda r, v, m, g, lam: slow_gae(r, v, m, g, lam, use_mask=False), "padding")
    fails_with(ex.check_gae, lambda r, v, m, g, lam: slow_gae(r, v, m, g, lam, gamma_in_recursion=False),
               "γ appears there too")


def ppo_loss(logp, old_logp, adv, mask, clip, pick=torch.max, clip_on=True, masked=True):
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - clip, 1 + clip) if clip_on else ratio
    losses = pick(-adv * ratio, -adv * clipped)
    return (losses * mask).sum() / mask.sum() if masked else losses.mean()


def test_check_policy_loss_names_the_mistake():
    fails_with(ex.check_policy_loss, lambda *a: ppo_loss(*a, pick=torch.min), "pessimistic")
    fails_with(ex.check_policy_loss, lambda *a: ppo_loss(*a, clip_on=False), "not clipped")
    fails_with(ex.check_policy_loss, lambda *a: ppo_loss(*a, masked=False), "real tokens only")
    fails_with(ex.check_policy_loss, lambda *a: ppo_loss(*a).detach(), "no gradient")


# ---- 08 k3 --------------------------------------------------------------------------------------------------------


def test_check_k3_names_the_mistake():
    fails_with(ex.check_k3, lambda lp, ref: lp - ref, "negative values", "k1")
    fails_with(ex.check_k3, lambda lp, ref: torch.expm1(lp - ref) - (lp - ref), "r is inverted")
    fails_with(ex.check_k3, lambda lp, ref: 0.5 * (ref - lp) ** 2, "k2")


def test_reference_k3_by_hand():
    # r = π_SFT/π_RL = 2: k3 = (2 − 1) − log 2
    got = ex.reference_k3(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]))
    assert got.item() == pytest.approx(1 - math.log(2))


# ---- 09 win rate --------------------------------------------------------------------------------------------------


def test_check_win_rate_names_the_mistake():
    fails_with(ex.check_win_rate, lambda s, b: sum(x > y for x, y in zip(s, b)) / len(s), "HALF a win", "counted them as losses")
    fails_with(ex.check_win_rate, lambda s, b: sum(x >= y for x, y in zip(s, b)) / len(s), "as full wins")
    fails_with(ex.check_win_rate, lambda s, b: sum(x > y for x, y in zip(s, b)) + 0.5 * sum(x == y for x, y in zip(s, b)),
               "FRACTION")


# ---- 10 DPO loss --------------------------------------------------------------------------------------------------


def dpo(lw, ll, rw, rl, beta, with_ref=True, beta_inside=True, reduce=torch.mean, logsig=F.logsigmoid):
    margin = (lw - rw) - (ll - rl) if with_ref else lw - ll
    return -reduce(logsig(beta * margin)) if beta_inside else -beta * reduce(logsig(margin))


def test_check_dpo_loss_names_the_mistake():
    fails_with(ex.check_dpo_loss, lambda lw, ll, rw, rl, b: dpo(ll, lw, rl, rw, b), "sign is flipped")
    fails_with(ex.check_dpo_loss, lambda lw, ll, rw, rl, b: dpo(lw, ll, rw, rl, b, with_ref=False),
               "reference model is missing")
    fails_with(ex.check_dpo_loss, lambda lw, ll, rw, rl, b: dpo(lw, ll, rw, rl, b, beta_inside=False), "INSIDE")
    fails_with(ex.check_dpo_loss, lambda lw, ll, rw, rl, b: dpo(lw, ll, rw, rl, b, reduce=torch.sum), "SUM over pairs")
    naive = lambda lw, ll, rw, rl, b: dpo(lw, ll, rw, rl, b, logsig=lambda x: torch.log(torch.sigmoid(x)))
    fails_with(ex.check_dpo_loss, naive, "F.logsigmoid")
    fails_with(ex.check_dpo_loss, lambda *a: dpo(*a).detach(), "no gradient")


def test_reference_dpo_loss_by_hand():
    # r̂_w = 0.5·(−3 + 4) = 0.5, r̂_l = 0.5·(−5 + 4.5) = −0.25: −log σ(0.75); and π = π_ref gives log 2
    got = ex.reference_dpo_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]),
                                torch.tensor([-4.5]), beta=0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-0.75)))
    same = torch.tensor([-7.0, -2.0])
    assert ex.reference_dpo_loss(same, same.flip(0), same, same.flip(0), beta=0.1).item() == pytest.approx(math.log(2))
