"""GRPO and RLOO: group advantages by hand, the two places of the KL, and tiny runs against the gold labeler."""

import copy
import math

import pytest
import torch
from tiny_rl import single_thread, tiny_setup, trainable

from minirlhf import evaluate as ev
from minirlhf.grpo import GRPOConfig, advantages, group_advantages, group_rollout, k3_per_token, train_grpo
from minirlhf.ppo import score
from minirlhf.tokenizer import encode_chat_prompt


def test_group_advantages_by_hand():
    returns = torch.tensor([[1.0, 0.0, 0.0, 3.0], [0.5, 0.5, 0.5, 0.5]])
    # row 1: mean 1, unbiased std = √((0 + 1 + 1 + 4) / 3) = √2; row 2: all equal, no signal
    grpo = group_advantages(returns, "grpo", eps=1e-12)   # ε only keeps 0 / 0 (row 2) at 0
    s = math.sqrt(2)
    torch.testing.assert_close(grpo[0], torch.tensor([0.0, -1 / s, -1 / s, 2 / s]))
    assert grpo[1].abs().max() < 1e-6
    # RLOO: R_i − mean of the other three: 1 − 1, 0 − 4/3, 0 − 4/3, 3 − 1/3
    rloo = group_advantages(returns, "rloo")
    torch.testing.assert_close(rloo[0], torch.tensor([0.0, -4 / 3, -4 / 3, 8 / 3]))
    torch.testing.assert_close(rloo, 4 / 3 * (returns - returns.mean(1, keepdim=True)))   # G/(G−1)·(R − mean)
    assert rloo[1].abs().max() == 0


def test_group_advantages_of_two_answers():
    returns = torch.tensor([[2.0, 0.0]])
    torch.testing.assert_close(group_advantages(returns, "rloo"), torch.tensor([[2.0, -2.0]]))
    # std of (2, 0) is √2 (÷ (G−1)): Â = ±1/√2, whatever the reward's scale
    torch.testing.assert_close(group_advantages(returns, "grpo", eps=0.0), torch.tensor([[1.0, -1.0]]) / math.sqrt(2))
    torch.testing.assert_close(group_advantages(100 * returns, "grpo", eps=0.0), torch.tensor([[1.0, -1.0]]) / math.sqrt(2))
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="unknown advantage"):
        group_advantages(returns, "ppo")


def test_k3_per_token_is_the_k3_estimator_and_never_negative():
    logp, ref_logp = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -2.0, -0.1]])
    r = (ref_logp - logp).exp()                                              # π_SFT / π
    torch.testing.assert_close(k3_per_token(logp, ref_logp), r - (ref_logp - logp) - 1)
    assert k3_per_token(logp, ref_logp)[0, 1] == 0 and (k3_per_token(logp, ref_logp) >= 0).all()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tiny(one_thread):
    world, tokenizer, sft, prompts, gold = tiny_setup()
    return world, tokenizer, sft, prompts, gold, [encode_chat_prompt(tokenizer, p) for p in prompts]


def _cfg(**overrides):
    base = dict(iterations=10, prompts_per_iteration=8, group_size=4, beta=0.01, lr=1e-3, max_new_tokens=16, seed=0)
    return GRPOConfig(**{**base, **overrides})


def test_group_rollout_keeps_each_prompts_answers_together(tiny):
    world, tokenizer, sft, prompts, gold, encoded = tiny
    cfg = _cfg(prompts_per_iteration=5, group_size=3, minibatches=1)
    ro = group_rollout(sft, encoded, cfg, tokenizer, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    groups = [ro.prompt_index[g * 3:(g + 1) * 3] for g in range(5)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 5   # 5 distinct prompts × 3
    assert ro.sequences.shape[0] == 15 and ro.sample_logprobs.shape == ro.mask.shape


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_the_returns_and_advantages_of_a_rollout(tiny, kl_in):
    world, tokenizer, sft, prompts, gold, encoded = tiny
    cfg = _cfg(advantage="rloo", kl_in=kl_in, beta=0.5)
    policy = copy.deepcopy(sft)
    with torch.no_grad():   # move the policy off the reference, so that the KL is not 0
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ro = group_rollout(policy, encoded, cfg, tokenizer, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    _, scores = score(ro, gold, cfg.missing_eos_penalty)
    batch = advantages(ro, scores, policy=policy, reference=sft, cfg=cfg)
    kl = ((batch.old_logp - batch.ref_logp) * batch.mask).sum(1)            # Σ_t log(π/π_SFT)_t per answer
    assert kl.abs().max() > 0.01
    expected = scores - 0.5 * kl if kl_in == "reward" else scores           # InstructGPT's return, or r_θ alone
    torch.testing.assert_close(batch.returns, expected)
    per_answer = group_advantages(expected.view(-1, 4), "rloo").view(-1)
    torch.testing.assert_close(batch.advantages, per_answer[:, None] * batch.mask)   # the same Â on every token


def gold_of(model, tiny) -> float:
    world, tokenizer, _, prompts, _, _ = tiny
    return ev.summarize(ev.sample_answers(model, tokenizer, world, prompts * 2, 1.0, 24, seed=123))["gold"]


def run(tiny, **overrides):
    world, tokenizer, sft, prompts, gold, encoded = tiny
    return train_grpo(trainable(sft), encoded, _cfg(**overrides), reference=sft, reward_model=gold,
                      tokenizer=tokenizer, eval_fn=ev.rollout_gold(world, prompts, tokenizer), progress=False)


@pytest.mark.parametrize("advantage,kl_in", [("grpo", "loss"), ("rloo", "reward")])
def test_grpo_and_rloo_against_the_gold_labeler_raise_the_gold_score(tiny, advantage, kl_in):
    sft = tiny[2]
    policy, history = run(tiny, advantage=advantage, kl_in=kl_in)
    assert gold_of(policy, tiny) > gold_of(sft, tiny) + 0.06
    assert sum(history["rm_reward"][-3:]) / 3 > sum(history["rm_reward"][:3]) / 3 + 0.05
    assert history["rm_reward"] == pytest.approx(history["gold"], abs=1e-6)   # the reward is the gold score
    assert max(history["logprob_gap"]) < 1e-4                                 # sampling and the forward pass agree
    assert all(k >= 0 for k in history["kl_k3"]) and len(history["clipfrac"]) == 10
    assert not any(p.requires_grad for p in sft.parameters()) and not policy.training


def test_the_kl_term_in_the_loss_holds_the_policy_near_the_reference(tiny):
    kl = {beta: run(tiny, beta=beta, iterations=8)[1]["kl_k3"][-1] for beta in (0.0, 2.0)}
    assert kl[2.0] < kl[0.0]


def test_seeded_runs_repeat_exactly(tiny):
    a, b = (run(tiny, iterations=3, seed=5)[1] for _ in range(2))
    assert {k: v for k, v in a.items() if not k.startswith("time_")} == \
        {k: v for k, v in b.items() if not k.startswith("time_")}


def test_bad_configs_and_arguments_raise_clear_errors(tiny):
    world, tokenizer, sft, prompts, gold, encoded = tiny
    with pytest.raises(ValueError, match="choose one of"):
        GRPOConfig(advantage="ppo")
    with pytest.raises(ValueError, match="'loss'"):
        GRPOConfig(kl_in="both")
    with pytest.raises(ValueError, match="G >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="not divisible by minibatches"):
        GRPOConfig(prompts_per_iteration=3, group_size=3, minibatches=2)
    with pytest.raises(ValueError, match="temperature"):
        GRPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match="share parameters"):
        train_grpo(sft, encoded, _cfg(), reference=sft, reward_model=gold, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="token-id lists"):
        train_grpo(trainable(sft), [p.text for p in prompts], _cfg(), reference=sft, reward_model=gold,
                   tokenizer=tokenizer)
    with pytest.raises(ValueError, match="max_new_tokens"):
        train_grpo(trainable(sft), encoded, _cfg(max_new_tokens=120), reference=sft, reward_model=gold,
                   tokenizer=tokenizer)
