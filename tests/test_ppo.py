"""PPO (InstructGPT step 3): the math against hand examples and slow references, then tiny seeded runs."""

import copy
import math

import pytest
import torch

from minirlhf.model import make_optimizer, response_logits, token_logprobs
from minirlhf.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    advantages,
    check_finite,
    entropy,
    explained_variance,
    gae_advantages,
    kl_estimators,
    kl_penalty,
    per_token_rewards,
    policy_loss,
    ptx_loss,
    rollout,
    score,
    train_ppo,
    update,
    value_loss,
    whiten,
)
from minirlhf.tokenizer import encode_chat_prompt

# ---------------------------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------------------------


def slow_gae(rewards, values, mask, gamma, lam):
    """Obviously-correct GAE: for every real token t, A_t = Σ_l (γλ)^l δ_{t+l}, with V = 0 after the last real token."""
    B, R = rewards.shape
    adv = torch.zeros(B, R, dtype=torch.float64)
    for b in range(B):
        real = [t for t in range(R) if mask[b, t] == 1]
        n = len(real)
        v = [float(values[b, t]) for t in real] + [0.0]  # V(s_n) = 0: the episode is over
        r = [float(rewards[b, t]) for t in real]
        deltas = [r[i] + gamma * v[i + 1] - v[i] for i in range(n)]
        for i in range(n):
            adv[b, real[i]] = sum((gamma * lam) ** l * deltas[i + l] for l in range(n - i))
    returns = (adv + values.double()) * mask.double()
    return adv, returns


def test_gae_hand_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: δ = (-0.3, -0.1, 0.9); A_2 = 0.9, A_1 = -0.1 + 0.5·0.9 = 0.35, A_0 = -0.3 + 0.5·0.35 = -0.125
    # row 1 (2 real tokens; the 7 and 9 at padding are ignored): δ = (0, 1); A_1 = 1, A_0 = 0.5
    torch.testing.assert_close(adv, torch.tensor([[-0.125, 0.35, 0.9], [0.5, 1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.375, 0.55, 1.0], [1.5, 2.0, 0.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_slow_reference_on_random_masked_inputs(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, R = 7, 11
    rewards, values = torch.randn(B, R, generator=g), torch.randn(B, R, generator=g)
    lengths = torch.randint(1, R + 1, (B,), generator=g)
    mask = (torch.arange(R)[None, :] < lengths[:, None]).long()  # right-padded responses
    adv, ret = gae_advantages(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = slow_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv.double(), ref_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret.double(), ref_ret, atol=1e-5, rtol=1e-5)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0, 0.0]]))  # Monte-Carlo returns
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.5, 2.5, 0.0]]))


# ---------------------------------------------------------------------------------------------------------------
# Clipped policy and value losses
# ---------------------------------------------------------------------------------------------------------------


def _policy_grad(ratio: float, advantage: float, clip_range: float = 0.2) -> float:
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    loss, _, _ = policy_loss(logp, old, torch.tensor([[advantage]]), torch.ones(1, 1), clip_range)
    loss.backward()
    return logp.grad.item()


def test_policy_loss_gradient_is_zero_once_clipped_in_the_direction_of_the_advantage():
    assert _policy_grad(1.5, +1.0) == 0.0  # A > 0, ratio > 1+ε: no further push up
    assert _policy_grad(0.5, -1.0) == 0.0  # A < 0, ratio < 1−ε: no further push down
    assert _policy_grad(1.1, +1.0) < 0.0  # inside the range: the loss still decreases as log π rises
    assert _policy_grad(0.9, -1.0) > 0.0
    # the pessimistic side is NOT clipped: a ratio that moved the wrong way still gets a gradient
    assert _policy_grad(0.5, +1.0) < 0.0
    assert _policy_grad(1.5, -1.0) > 0.0


def test_policy_loss_values_clipfrac_and_approx_kl():
    adv = torch.tensor([[1.0, -2.0, 3.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    old = torch.zeros(1, 4)
    loss, clipfrac, approx_kl = policy_loss(old.clone(), old, adv, mask)  # ratio = 1 everywhere
    assert loss.item() == pytest.approx(-(1 - 2 + 3) / 3)  # −mean A over real tokens
    assert clipfrac.item() == 0.0 and approx_kl.item() == 0.0
    logp = torch.log(torch.tensor([[1.5, 1.0, 1.0, 1.0]]))
    loss, clipfrac, approx_kl = policy_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(-(1.2 * 1 - 2 + 3) / 3)  # token 0 clipped at 1+ε = 1.2
    assert clipfrac.item() == pytest.approx(1 / 3)
    assert approx_kl.item() == pytest.approx(0.5 * math.log(1.5) ** 2 / 3)


def test_value_loss_clipping():
    old, ret, mask = torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    # V jumped from 0 to 1 = the return: unclipped error 0, clipped V = 0.2 has error 0.8 -> the max is taken
    v = torch.ones(1, 1, requires_grad=True)
    loss, vf_clipfrac = value_loss(v, old, ret, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.8**2)
    assert vf_clipfrac.item() == 1.0
    loss.backward()
    assert v.grad.item() == 0.0  # the clipped branch does not depend on V
    # a small step: both branches agree, the plain ½(V − R)² with its gradient
    v = torch.full((1, 1), 0.1, requires_grad=True)
    loss, vf_clipfrac = value_loss(v, old, ret, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.9**2)
    assert vf_clipfrac.item() == 0.0
    loss.backward()
    assert v.grad.item() == pytest.approx(-0.9)


# ---------------------------------------------------------------------------------------------------------------
# KL, rewards, whitening, controllers
# ---------------------------------------------------------------------------------------------------------------


def test_k3_is_never_negative_and_k1_can_be():
    g = torch.Generator().manual_seed(1)
    logp, ref = -torch.rand(200, 5, generator=g) * 3, -torch.rand(200, 5, generator=g) * 3
    mask = torch.ones(200, 5)
    for b in range(200):
        _, k3 = kl_estimators(logp[b : b + 1], ref[b : b + 1], mask[b : b + 1])
        assert k3.item() >= 0.0
    assert (kl_penalty(logp, ref) < 0).any()  # k1 per token: negative for some tokens


def test_k1_and_k3_means_estimate_the_true_kl():
    """Brute force: two autoregressive policies over 2 tokens from a vocabulary of 3; 9 sequences in all."""
    g = torch.Generator().manual_seed(0)
    logits_pi = torch.randn(4, 3, generator=g)  # row 0: first token; rows 1..3: second token given the first
    logits_ref = torch.randn(4, 3, generator=g)
    lp_pi, lp_ref = logits_pi.log_softmax(-1), logits_ref.log_softmax(-1)
    true_kl = 0.0
    for a in range(3):
        for b in range(3):
            log_pi = lp_pi[0, a] + lp_pi[1 + a, b]
            log_ref = lp_ref[0, a] + lp_ref[1 + a, b]
            true_kl += (log_pi.exp() * (log_pi - log_ref)).item()
    n = 200_000
    first = torch.multinomial(lp_pi[0].exp(), n, replacement=True, generator=g)  # (n,)
    second = torch.multinomial(lp_pi[1 + first].exp(), 1, generator=g).squeeze(1)  # (n,)
    logp = torch.stack([lp_pi[0, first], lp_pi[1 + first, second]], 1)  # (n, 2)
    ref_logp = torch.stack([lp_ref[0, first], lp_ref[1 + first, second]], 1)
    k1, k3 = kl_estimators(logp, ref_logp, torch.ones(n, 2))
    assert true_kl > 0.05
    assert k1.item() == pytest.approx(true_kl, rel=0.05)
    assert k3.item() == pytest.approx(true_kl, rel=0.05)


def test_per_token_rewards_puts_the_score_on_the_last_real_token():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards = per_token_rewards(torch.tensor([2.0, 5.0]), logp, ref, mask, beta=0.1)
    # row 0: −β·(0.5, 0, −1) and +2 on token 2; row 1: a one-token response gets the whole score at t = 0
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 0.1 + 2.0], [5.0, 0.0, 0.0]]))


def test_kl_penalty_is_exactly_zero_when_policy_equals_reference():
    from minirlhf.model import GPT, get_config

    torch.manual_seed(0)
    policy = GPT(get_config("tiny", vocab_size=50)).eval()
    ref = copy.deepcopy(policy)
    seq = torch.randint(0, 50, (3, 10))
    tokens = seq[:, 5:]
    logp = token_logprobs(response_logits(policy, seq, None, 5), tokens, temperature=0.7)
    ref_logp = token_logprobs(response_logits(ref, seq, None, 5), tokens, temperature=0.7)
    mask = torch.ones_like(logp)
    assert torch.equal(kl_penalty(logp, ref_logp), torch.zeros_like(logp))
    k1, k3 = kl_estimators(logp, ref_logp, mask)
    assert k1.item() == 0.0 and k3.item() == 0.0
    rewards = per_token_rewards(torch.tensor([1.0, 2.0, 3.0]), logp, ref_logp, mask, beta=0.5)
    assert rewards[:, :-1].abs().sum() == 0 and rewards[:, -1].tolist() == [1.0, 2.0, 3.0]


def test_logprobs_and_entropy_apply_the_temperature():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    expected = torch.log_softmax(logits / 2.0, -1)
    assert token_logprobs(logits, torch.tensor([[0]]), temperature=2.0).item() == pytest.approx(expected[0, 0, 0].item())
    assert entropy(logits, temperature=2.0).item() == pytest.approx(-(expected.exp() * expected).sum().item())
    assert entropy(torch.zeros(1, 1, 8)).item() == pytest.approx(math.log(8))  # uniform: log V


def test_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    w = whiten(x, mask)
    real = w[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-5)
    assert w[0, 3] == 0.0  # padding stays 0 (the 100 did not leak in)
    kept = whiten(x, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(x[mask.bool()].mean().item(), abs=1e-5)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-5)


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask) == pytest.approx(0.0)


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    up = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    up.update(current_kl=12.0, n_steps=64)  # KL above target: error clipped to +0.2
    assert up.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    down = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    down.update(current_kl=5.4, n_steps=64)  # error −0.1
    assert down.value == pytest.approx(0.1 * (1 - 0.1 * 64 / 10000))
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 64)
    assert fixed.value == 0.1


def test_ptx_loss_is_the_causal_lm_nll():
    from minirlhf.model import GPT, get_config

    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=50)).eval()
    batch = torch.randint(0, 50, (4, 12))
    _, expected = model(batch[:, :-1], targets=batch[:, 1:])
    assert ptx_loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_check_finite_names_the_iteration_and_the_statistic():
    check_finite(3, {"value_loss": 1.0, "explained_variance": float("nan")})  # EV may be undefined
    with pytest.raises(FloatingPointError, match="iteration 7: value_loss is nan"):
        check_finite(7, {"policy_loss": 0.1, "value_loss": float("nan")})
    with pytest.raises(FloatingPointError, match="iteration 0: kl is inf"):
        check_finite(0, {"kl": float("inf")})


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(batch_size=10, minibatches=3)
    with pytest.raises(ValueError, match="temperature"):
        PPOConfig(temperature=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Tiny seeded runs of the whole loop (a stub reward the policy can learn; the real stages are the lead's test)
# ---------------------------------------------------------------------------------------------------------------


TEXTS = ("what colour does bobo like ?", "tell me about kiki .", "name two foods .")


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer):
    """The prompt distribution D as train_ppo takes it: chat-formatted token ids."""
    return [encode_chat_prompt(tiny_tokenizer, t) for t in TEXTS]


class TokenCountReward(torch.nn.Module):
    """A learnable stub r_θ: a quarter point per token of the sequence that lies in a fixed set of 30 token ids."""

    def __init__(self, vocab_size: int, rewarded=range(100, 130)):
        super().__init__()
        self.register_buffer("rewarded", torch.zeros(vocab_size, dtype=torch.bool))
        self.rewarded[list(rewarded)] = True

    def forward(self, idx, attention_mask=None):  # (B, T) -> (B,)
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask
        return (self.rewarded[idx].float() * mask).sum(1) / 4


@pytest.fixture()
def one_thread():
    """Tiny models spend their time in per-op overhead: one thread is faster, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _models(tokenizer, seed=0, dropout=0.0):
    from minirlhf.model import GPT, get_config
    from minirlhf.reward import RewardModel

    torch.manual_seed(seed)
    policy = GPT(get_config("tiny", vocab_size=len(tokenizer), dropout=dropout))
    ref = copy.deepcopy(policy)
    value = RewardModel.from_gpt(policy)  # V starts from the same trunk, as InstructGPT's starts from the RM
    return policy, ref, TokenCountReward(len(tokenizer)), value


def _cfg(**overrides):
    base = dict(iterations=25, batch_size=16, minibatches=2, max_new_tokens=8, lr=1e-3, init_kl_coef=0.0,
                missing_eos_penalty=None, seed=0)
    return PPOConfig(**{**base, **overrides})


def _train(models, prompts, tokenizer, cfg, **kwargs):
    """train_ppo on (policy, reference, reward model, value model); returns the history."""
    policy, ref, rm, value = models
    trained, history = train_ppo(policy, prompts, cfg, reference=ref, reward_model=rm, value_model=value,
                                 tokenizer=tokenizer, progress=False, **kwargs)
    assert trained is policy
    return history


def test_ppo_raises_a_simple_learnable_reward(tiny_tokenizer, prompts, one_thread):
    h = _train(_models(tiny_tokenizer), prompts, tiny_tokenizer, _cfg())
    first, last = sum(h["rm_reward"][:5]) / 5, sum(h["rm_reward"][-5:]) / 5
    assert last > first + 0.3, h["rm_reward"]  # starts near 8 tokens × 30/300 × ¼ = 0.2
    assert h["entropy"][-1] < h["entropy"][0]  # the policy concentrates on the rewarded tokens
    assert max(h["logprob_gap"]) < 1e-4  # sampling and the recomputed forward pass agree (same τ)
    for key in ("kl", "kl_k3", "beta", "clipfrac", "approx_kl", "policy_loss", "value_loss", "ptx_loss",
                "explained_variance", "response_length", "ended_fraction", "time_generate", "time_score",
                "time_update"):
        assert len(h[key]) == 25, key
    assert all(isinstance(v, list) for v in h.values())  # a dict of lists, as every stage's history
    assert "gold" not in h  # no eval_fn given


def test_train_ppo_is_its_steps(tiny_tokenizer, prompts, one_thread):
    """One iteration by hand (rollout, score, advantages, update) gives train_ppo's numbers."""
    cfg = _cfg(iterations=1, init_kl_coef=0.1)
    h = _train(_models(tiny_tokenizer), prompts, tiny_tokenizer, cfg)
    policy, ref, rm, value = _models(tiny_tokenizer)
    policy.eval(), value.eval()
    cpu_gen, sample_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ro = rollout(policy, prompts, cfg, tiny_tokenizer, cpu_gen, sample_gen)
    assert ro.responses.shape == ro.mask.shape == ro.sample_logprobs.shape and len(ro.prompt_index) == 16
    r_theta, scores = score(ro, rm, cfg.missing_eos_penalty)
    batch = advantages(ro, scores, policy=policy, reference=ref, value_model=value, beta=0.1, cfg=cfg)
    assert batch.advantages.shape == batch.returns.shape == batch.old_logp.shape == ro.mask.shape
    optimizer = make_optimizer([(policy, cfg.lr), (value, cfg.lr)], betas=(0.9, 0.999), eps=cfg.adam_eps)
    stats = update(batch, policy=policy, value_model=value, optimizer=optimizer, cfg=cfg, generator=cpu_gen)
    assert [r_theta.mean().item(), batch.stats["kl"], stats["policy_loss"], stats["value_loss"]] == \
        [h["rm_reward"][0], h["kl"][0], h["policy_loss"][0], h["value_loss"][0]]


def test_kl_penalty_holds_the_policy_near_the_reference(tiny_tokenizer, prompts, one_thread):
    runs = {beta: _train(_models(tiny_tokenizer), prompts, tiny_tokenizer, _cfg(init_kl_coef=beta, iterations=15))
            for beta in (0.0, 1.0)}
    assert runs[1.0]["kl"][-1] < runs[0.0]["kl"][-1]


def test_same_seed_gives_identical_histories(tiny_tokenizer, prompts, one_thread):
    histories = [_train(_models(tiny_tokenizer), prompts, tiny_tokenizer, _cfg(iterations=4)) for _ in range(2)]
    a, b = ({k: v for k, v in h.items() if not k.startswith("time_")} for h in histories)
    assert a == b


def test_dropout_is_off_during_ppo_and_modes_are_restored(tiny_tokenizer, prompts, one_thread):
    policy, ref, rm, value = models = _models(tiny_tokenizer, dropout=0.1)
    policy.train(), value.train()
    seen = []
    _train(models, prompts, tiny_tokenizer, _cfg(iterations=2),
           callback=lambda it, stats: seen.append((it, policy.training, value.training)))
    assert seen == [(0, False, False), (1, False, False)]
    assert policy.training and value.training  # the caller's modes come back


def test_train_ppo_freezes_the_reference_and_the_reward_model(tiny_tokenizer, prompts, one_thread):
    policy, ref, _, value = _models(tiny_tokenizer)
    rm = copy.deepcopy(value)  # a real reward model, with parameters
    before = copy.deepcopy(ref.state_dict())
    _train((policy, ref, rm, value), prompts, tiny_tokenizer, _cfg(iterations=1))
    assert not any(p.requires_grad for p in ref.parameters())
    assert not any(p.requires_grad for p in rm.parameters())
    assert all(p.requires_grad for p in policy.parameters()) and all(p.requires_grad for p in value.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())  # the KL anchor never moves


def test_missing_eos_penalty_replaces_the_score_of_unended_responses(tiny_tokenizer, prompts, one_thread):
    class ConstantReward(torch.nn.Module):
        def forward(self, idx, attention_mask=None):
            return torch.full((idx.shape[0],), 0.5)

    policy, ref, _, value = _models(tiny_tokenizer)
    h = _train((policy, ref, ConstantReward(), value), prompts, tiny_tokenizer,
               _cfg(iterations=1, missing_eos_penalty=-3.0, batch_size=64))
    ended = h["ended_fraction"][0]
    assert ended < 1.0  # an untrained model rarely says EOS within 8 tokens
    assert h["rm_reward"][0] == pytest.approx(0.5)
    assert h["score"][0] == pytest.approx(0.5 * ended - 3.0 * (1 - ended))


def test_ppo_ptx_mixes_in_the_pretraining_loss(tiny_tokenizer, prompts, one_thread):
    stream = torch.tensor(tiny_tokenizer.encode(" ".join(["bobo likes red ."] * 200)))
    models = _models(tiny_tokenizer)
    cfg = _cfg(iterations=6, ptx_coef=1.0, ptx_batch_size=4, ptx_seq_len=16)
    h = _train(models, prompts, tiny_tokenizer, cfg, pretrain_ids=stream)
    assert all(x > 0 for x in h["ptx_loss"])
    assert h["ptx_loss"][-1] < h["ptx_loss"][0]  # the repeated sentence is easy to learn
    with pytest.raises(ValueError, match="pretrain_ids"):
        _train(models, prompts, tiny_tokenizer, cfg)
    with pytest.raises(ValueError, match="pretrain_ids"):
        _train(models, prompts, tiny_tokenizer, cfg, pretrain_ids=stream[:16])  # shorter than a window


def test_an_eval_fn_logs_the_gold_score(tiny_tokenizer, one_thread):
    from minirlhf.evaluate import rollout_gold
    from minirlhf.world import World, WorldConfig

    world = World(WorldConfig())
    train = [p for p in world.prompts("train") if len(encode_chat_prompt(tiny_tokenizer, p.text)) <= 40][:20]
    encoded = [encode_chat_prompt(tiny_tokenizer, p.text) for p in train]
    h = _train(_models(tiny_tokenizer), encoded, tiny_tokenizer, _cfg(iterations=2),
               eval_fn=rollout_gold(world, train, tiny_tokenizer))
    assert len(h["gold"]) == 2 and all(math.isfinite(g) for g in h["gold"])


def test_a_nan_reward_stops_the_run_naming_the_statistic(tiny_tokenizer, prompts, one_thread):
    class NaNReward(torch.nn.Module):
        def forward(self, idx, attention_mask=None):
            return torch.full((idx.shape[0],), float("nan"))

    policy, ref, _, value = _models(tiny_tokenizer)
    with pytest.raises(FloatingPointError, match="iteration 0: rm_reward is nan"):
        _train((policy, ref, NaNReward(), value), prompts, tiny_tokenizer, _cfg(iterations=3))


def test_train_ppo_rejects_bad_arguments(tiny_tokenizer, prompts):
    policy, ref, rm, value = _models(tiny_tokenizer)
    with pytest.raises(ValueError, match="share parameters"):
        _train((policy, policy, rm, value), prompts, tiny_tokenizer, _cfg())
    with pytest.raises(ValueError, match="share parameters"):  # a shallow copy shares every parameter
        _train((copy.copy(ref), ref, rm, value), prompts, tiny_tokenizer, _cfg())
    with pytest.raises(ValueError, match="own copy"):
        _train((policy, ref, value, value), prompts, tiny_tokenizer, _cfg())
    with pytest.raises(ValueError, match="max_new_tokens"):
        _train((policy, ref, rm, value), prompts, tiny_tokenizer, _cfg(max_new_tokens=60))
    with pytest.raises(ValueError, match="token-id lists"):
        _train((policy, ref, rm, value), list(TEXTS), tiny_tokenizer, _cfg())
    with pytest.raises(ValueError, match="no trainable parameters"):
        _train((copy.deepcopy(policy).requires_grad_(False), ref, rm, value), prompts, tiny_tokenizer, _cfg())
