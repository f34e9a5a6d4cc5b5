"""InstructGPT step 3: optimise the policy against the reward model with PPO (Ouyang et al. 2022, §3.5).

The objective (the seed lecture's slide, see docs/slide_map.md; InstructGPT eq. 2):

    objective(ϕ) = E_{(x,y)~π_RL}[ r_θ(x, y) − β·log(π_RL(y|x) / π_SFT(y|x)) ]  +  γ_ptx·E_{x~D_pretrain}[ log π_RL(x) ]

  r_θ(x, y)   the reward model's scalar score of the whole response            (reward.RewardModel)
  β           the KL coefficient: keeps π_RL close to π_SFT, so the RM is not over-optimised
  γ_ptx       the pre-training mix coefficient: γ_ptx = 0 is "PPO", γ_ptx > 0 is "PPO-ptx" (not GAE's discount γ)

The KL term is paid per token, the score once at the end of the response (Ziegler et al. 2019; Stiennon et al.
2020), and PPO (Schulman et al. 2017) with generalised advantage estimation (GAE, Schulman et al. 2016) maximises
the sum. Every implementation detail sits in this file, in the order it runs, in the spirit of CleanRL and of
"The N Implementation Details of RLHF with PPO" (Huang et al. 2023). One iteration of `train_ppo`:

  1. rollout      sample responses y ~ π_RL(·|x) at temperature τ                        (rollout)
  2. score        r_θ(x, y); a fixed penalty for responses that never end                (score)
  3. KL           log-probs of y under π_RL (the "old" policy) and π_SFT, same τ         (advantages: kl_penalty)
  4. rewards      −β·KL on every token, + r_θ on the last token                          (advantages: per_token_rewards)
  5. advantages   GAE(γ, λ) with the value model V(s_t), then whitening                  (advantages: gae_advantages)
  6. update       ppo_epochs × minibatches of clipped policy + clipped value losses       (update: policy_loss,
                  (+ γ_ptx · pre-training NLL)                                             value_loss, ptx_loss)
  7. adapt β      towards a target KL                                                    (AdaptiveKLController)

Shapes: B = prompts in the rollout, P = (left-padded) prompt length, R = (right-padded) response length,
V = vocabulary size. `mask` is the response mask (B, R): 1 for real response tokens (the EOS included), 0 for padding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minirlhf import distributed
from minirlhf.model import last_token_index, make_optimizer, response_logits, response_values, token_logprobs
from minirlhf.validate import check_integers, check_numbers

# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    iterations: int = 100            # rollouts (PPO "iterations"); each = one batch of prompts, then several updates
    batch_size: int = 64             # prompts per rollout (InstructGPT: 512; toy scale, 2 CPU cores)
    max_new_tokens: int = 24         # response length cap; responses cut here did not "end" (see missing_eos_penalty)
    temperature: float = 1.0         # τ: sampling AND every log-prob (π_RL, π_SFT, old, new) use logits / τ
    lr: float = 1.5e-5               # policy lr (InstructGPT: 9.65e-6; docs/calibration.md: 1e-5..2e-5 held, 5e-5 collapsed)
    value_lr: float | None = None    # value-model learning rate; None = lr (with Adam, vf_coef barely matters: see below)
    adam_eps: float = 1e-5           # Adam ε (the RLHF PPO codebases use 1e-5, not torch's 1e-8)
    ppo_epochs: int = 4              # passes over each rollout (InstructGPT / Stiennon et al.: 4)
    minibatches: int = 2             # minibatches per epoch (batch_size must be divisible by it)
    clip_range: float = 0.2          # ε: ratio π/π_old clipped to [1-ε, 1+ε] (Schulman et al. 2017)
    clip_range_value: float = 0.2    # value predictions clipped to old_value ± 0.2 (lm-human-preferences)
    vf_coef: float = 0.1             # c_1: weight of the value loss (lm-human-preferences: 0.1)
    gamma: float = 1.0               # γ (discount): 1, the reward is only the episode's sum
    lam: float = 0.95                # λ of GAE (lm-human-preferences: 0.95)
    init_kl_coef: float = 0.1        # β at the start (as in docs/calibration.md; InstructGPT: 0.02)
    adaptive_kl: bool = False        # True: adapt β towards target_kl (Ziegler et al. 2019); False: β fixed
    target_kl: float = 6.0           # KL target, nats per sequence (Ziegler et al. 2019: 6)
    kl_horizon: int = 10000          # horizon of the adaptive controller, in sequences (Ziegler et al.: 10000)
    ptx_coef: float = 0.0            # γ_ptx: 0 = PPO, > 0 = PPO-ptx (InstructGPT: 27.8, with a much larger pre-train batch)
    ptx_batch_size: int = 8          # pre-training sequences per minibatch when ptx_coef > 0
    ptx_seq_len: int | None = None   # tokens per pre-training sequence; None = the model's block_size
    missing_eos_penalty: float | None = -1.0  # score of a response without EOS is REPLACED by this (lm-human-preferences); None = off
    whiten_advantages: bool = True   # advantages → mean 0, std 1 over the batch's real tokens
    grad_clip: float = 1.0           # max global gradient norm, per model (policy, value)
    seed: int = 0                    # prompts, sampling and minibatch order all come from this seed

    def __post_init__(self):
        """Every number in its range, or a ValueError naming the field and the range (before any rollout)."""
        check_integers(self, iterations=1, batch_size=1, max_new_tokens=1, ppo_epochs=1, minibatches=1,
                       kl_horizon=1, ptx_batch_size=1, ptx_seq_len=2)   # ptx_seq_len None: the model's context
        check_numbers(self, lr=">", value_lr=">", adam_eps=">", clip_range=">", clip_range_value=">", target_kl=">",
                      grad_clip=">", vf_coef="≥", init_kl_coef="≥", ptx_coef="≥", missing_eos_penalty="finite")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PPOConfig.{name}={getattr(self, name)!r}: give a number in [0, 1]")
        if not math.isfinite(self.temperature):
            raise ValueError(f"PPOConfig.temperature={self.temperature!r}: give a finite number > 0")
        if self.batch_size % self.minibatches != 0:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by minibatches={self.minibatches}; "
                "choose e.g. batch_size=64, minibatches=2"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"temperature={self.temperature}: PPO needs a stochastic policy (temperature > 0); greedy decoding "
                "has no log-probabilities to optimise"
            )


# ----------------------------------------------------------------------------------------------------------------
# Small masked helpers
# ----------------------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask == 1 (all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of x over the positions where mask == 1."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1)
    return (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)


# ----------------------------------------------------------------------------------------------------------------
# The math, one function per equation
# ----------------------------------------------------------------------------------------------------------------


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(π(·| x, y_<t)) = −Σ_v π(v) log π(v) at each position, at temperature τ: (B, R, V) -> (B, R).

    Falls as the policy sharpens; a collapse warns of over-optimisation. Use the τ the tokens were sampled at.
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, R, V)
    return -(logp.exp() * logp).sum(-1)  # (B, R)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token log(π_RL(y_t|·) / π_SFT(y_t|·)) — the "k1" estimator of KL(π_RL ‖ π_SFT).

    logp, ref_logp: (B, R) log-probs of the SAMPLED tokens under π_RL and π_SFT. Returns (B, R).
    Unbiased (its mean over samples y ~ π_RL is the KL) but can be negative for a single token.
    """
    return logp - ref_logp  # (B, R)


def kl_estimators(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two estimates of KL(π_RL ‖ π_SFT) per SEQUENCE, averaged over the batch: (k1, k3) (Schulman, "Approximating KL").

    k1 = Σ_t log(π_RL/π_SFT)                          unbiased, high variance, can be negative
    k3 = Σ_t (r − 1) − log r,  r = π_SFT/π_RL         unbiased, lower variance, never negative (log r ≤ r − 1)
    Shapes: logp, ref_logp, mask (B, R) -> two scalars (nats per sequence; the unit of target_kl).
    """
    mask = mask.to(logp.dtype)
    k1 = (kl_penalty(logp, ref_logp) * mask).sum(1)  # (B,)
    log_r = ref_logp - logp  # (B, R) log(π_SFT/π_RL)
    k3 = ((torch.expm1(log_r) - log_r) * mask).sum(1)  # (B,)  expm1 = r − 1, accurate near r = 1
    return k1.mean(), k3.mean()


def per_token_rewards(
    score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """The reward PPO maximises, per token: r_t = −β·log(π_RL/π_SFT)_t, plus r_θ(x, y) on the LAST real token.

    score (B,) r_θ(x, y) (after the missing-EOS penalty); logp, ref_logp, mask (B, R). Returns rewards (B, R),
    0 at padding. Summed over t this is the slide's r_θ(x, y) − β·log(π_RL(y|x)/π_SFT(y|x)).
    """
    mask = mask.to(logp.dtype)
    rewards = -beta * kl_penalty(logp, ref_logp) * mask  # (B, R)  −β·KL, every token
    last = last_token_index(mask)  # (B,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(rewards.dtype)  # + r_θ(x, y) where the episode ends
    return rewards


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), over the response tokens.

        δ_t = r_t + γ·V(s_{t+1}) − V(s_t)              (V = 0 after the last real token: the episode ends)
        A_t = δ_t + γλ·A_{t+1}  = Σ_l (γλ)^l δ_{t+l}
        returns_t = A_t + V(s_t)                        (the value model's regression target)

    rewards, values, mask: (B, R), mask a right-padded response mask (ones, then zeros).
    Returns (advantages (B, R), returns (B, R)), 0 at padding. The loop runs backwards over time, all rows at once.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)  # (B, R)
    next_value = torch.zeros_like(values[:, 0])  # (B,)  V(s_{t+1}); 0 past the end
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)  A_{t+1}
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]  # 0 at padding: nothing flows back
        next_value = values[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * mask
    return advantages, returns


def global_mean_var(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked_mean, masked_var) of x over the real tokens of the whole batch: under torchrun, where each process
    holds a share of the rows, the sums are over every process's tokens (all-reduces); in a plain run, over x's
    (all_reduce is then the identity, and these are exactly masked_mean's and masked_var's operations)."""
    mask = mask.to(x.dtype)
    n = distributed.all_reduce(mask.sum())                                       # tokens in the whole batch
    mean = distributed.all_reduce((x * mask).sum()) / n.clamp(min=1)
    return mean, distributed.all_reduce((((x - mean) ** 2) * mask).sum()) / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the real tokens (mask == 1); shift_mean=False keeps the mean (only rescales).

    x, mask (B, R) -> (B, R), 0 at padding. Whitening advantages makes the step size independent of the reward scale.
    Under torchrun the mean and std are the whole batch's (global_mean_var), as in one process.
    """
    mean, var = global_mean_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

        ratio_t = π(y_t|·) / π_old(y_t|·)
        L = mean_t  max( −ratio_t·A_t,  −clip(ratio_t, 1−ε, 1+ε)·A_t )  =  −mean_t min(ratio·A, clip(ratio)·A)

    Once the ratio has moved past 1±ε in the direction the advantage pushes it, the clipped term wins and the
    gradient is zero: one rollout cannot drag the policy far. logp (with grad), old_logp, advantages, mask: (B, R).
    Returns (loss, clipfrac = fraction of tokens where clipping was active, approx_kl = mean ½(log π − log π_old)²).
    """
    log_ratio = logp - old_logp  # (B, R)
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg_loss2 > pg_loss1).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)  # KL(π_old ‖ π) to 2nd order: how far this update moved
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss (lm-human-preferences / PPO2):

        V_clip = V_old + clip(V − V_old, −ε_v, ε_v)
        L_V = ½ · mean_t max( (V − R_t)², (V_clip − R_t)² )

    values (with grad), old_values, returns, mask: (B, R). Returns (loss, vf_clipfrac).
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf_loss1 = (values - returns) ** 2
    vf_loss2 = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean((vf_loss2 > vf_loss1).float(), mask)
    return loss, vf_clipfrac


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over the real tokens: 1 = V predicts the returns, 0 = no better than a constant."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return (1.0 - masked_var(returns - values, mask) / var_returns).item()


class FixedKLController:
    """β stays constant (InstructGPT used a fixed β = 0.02)."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Adapt β so the KL per sequence tracks a target (Ziegler et al. 2019, §2.2):

        e_t = clip(KL_t / KL_target − 1, −0.2, 0.2)      (proportional error, clipped)
        β_{t+1} = β_t · (1 + K_β · e_t),  K_β = n_steps / horizon
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def ptx_loss(policy, batch: torch.Tensor) -> torch.Tensor:
    """−mean log π_RL(x) over a pre-training batch: the causal-LM NLL per token (the γ_ptx·E[log π_RL(x)] term,
    negated). batch: (B, T) token ids from the pre-training stream; tokens 1..T−1 are predicted from their prefixes.
    At temperature 1: it is the pre-training objective itself, not a score of sampled responses.
    """
    _, loss = policy(batch[:, :-1], targets=batch[:, 1:])  # the model's own mean next-token cross-entropy
    return loss


# ----------------------------------------------------------------------------------------------------------------
# The steps of one iteration
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """Step 1's output: B prompts x and the responses y ~ π_RL(·|x) sampled for them."""

    prompt_index: list[int]        # row b answers prompts[prompt_index[b]] (the list given to train_ppo)
    sequences: torch.Tensor        # (B, P+R) left-padded prompt + right-padded response
    attention_mask: torch.Tensor   # (B, P+R) 1 = real token, 0 = padding
    prompt_length: int             # P
    response_ids: list             # list[list[int]]: each response's tokens, EOS included if produced
    ended: torch.Tensor            # (B,) bool: the response produced EOS
    sample_logprobs: torch.Tensor  # (B, R) log π_RL(y_t|·) as sampled (checks the recomputed forward pass)

    @property
    def responses(self) -> torch.Tensor:
        """(B, R) the response tokens y_t."""
        return self.sequences[:, self.prompt_length:]

    @property
    def mask(self) -> torch.Tensor:
        """(B, R) float: 1 for real response tokens (the EOS included), 0 for padding."""
        return self.attention_mask[:, self.prompt_length:].float()


@dataclass
class Batch:
    """Steps 3-5's output: a scored rollout with everything the PPO updates need; tensors are row-aligned."""

    sequences: torch.Tensor        # (B, P+R)
    attention_mask: torch.Tensor   # (B, P+R)
    prompt_length: int             # P
    responses: torch.Tensor        # (B, R) y_t
    mask: torch.Tensor             # (B, R) 1 = real response token
    old_logp: torch.Tensor         # (B, R) log π_old(y_t | x, y_<t) at temperature τ, 0 at padding
    old_values: torch.Tensor       # (B, R) V_old(s_t), 0 at padding
    advantages: torch.Tensor       # (B, R) Â_t (whitened when cfg.whiten_advantages)
    returns: torch.Tensor          # (B, R) Â_t + V_old(s_t) before whitening: the value model's target
    stats: dict = field(default_factory=dict)  # diagnostics of the rollout: kl, kl_k3, entropy, ...

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def rows(self, index: torch.Tensor) -> Batch:
        """The minibatch of rows `index` (b,)."""
        return Batch(**{name: value[index] if torch.is_tensor(value) else value for name, value in vars(self).items()})


@torch.no_grad()
def rollout(policy, prompts: list[list[int]], cfg: PPOConfig, tokenizer, prompt_generator: torch.Generator,
            sample_generator: torch.Generator) -> Rollout:
    """Step 1: draw B = cfg.batch_size prompts x ~ D (distinct while there are enough) and sample y ~ π_RL(·|x) at
    temperature τ = cfg.temperature, at most cfg.max_new_tokens tokens each (a response that ends emits EOS)."""
    B = cfg.batch_size
    if B <= len(prompts):
        index = torch.randperm(len(prompts), generator=prompt_generator)[:B]
    else:  # fewer prompts than the batch: sample with replacement
        index = torch.randint(len(prompts), (B,), generator=prompt_generator)
    index = distributed.shard(index.tolist())   # under torchrun: this process's share of the B prompts
    gen = policy.generate([prompts[i] for i in index], max_new_tokens=cfg.max_new_tokens,
                          temperature=cfg.temperature, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, generator=sample_generator, return_logprobs=True)
    return Rollout(index, gen.sequences, gen.attention_mask, gen.prompt_length, gen.response_ids, gen.ended,
                   gen.logprobs)


@torch.no_grad()
def score(rollout: Rollout, reward_model, missing_eos_penalty: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: r_θ(x, y), the reward model read at the last real token of each row; a response that never ended
    (no EOS) is scored missing_eos_penalty instead (None: no penalty). Returns (r_θ (B,), the score PPO uses (B,))."""
    r_theta = reward_model(rollout.sequences, attention_mask=rollout.attention_mask).float()  # (B,)
    if missing_eos_penalty is None:
        return r_theta, r_theta
    return r_theta, torch.where(rollout.ended, r_theta, torch.full_like(r_theta, missing_eos_penalty))


@torch.no_grad()
def advantages(rollout: Rollout, scores: torch.Tensor, *, policy, reference, value_model, beta: float,
               cfg: PPOConfig) -> Batch:
    """Steps 3-5, one forward pass per model over the whole (B, P+R) rollout:

        3. KL          kl_t = log π_old(y_t|·) − log π_SFT(y_t|·), both at temperature τ      (kl_penalty)
        4. rewards     r_t = −β·kl_t, + score on the last real token                          (per_token_rewards)
        5. advantages  δ_t = r_t + γ·V(s_{t+1}) − V(s_t),  Â_t = Σ_l (γλ)^l δ_{t+l},  R_t = Â_t + V(s_t)  (GAE)

    scores (B,): step 2's score. π_old is the policy that sampled: its log-probs are recomputed here, exactly.
    """
    seq, attn, P = rollout.sequences, rollout.attention_mask, rollout.prompt_length  # (B, P+R), (B, P+R), P
    y, mask = rollout.responses, rollout.mask  # (B, R) each
    tau = cfg.temperature
    logits = response_logits(policy, seq, attn, P)  # (B, R, V) at the positions predicting y_t
    old_logp = token_logprobs(logits, y, tau) * mask  # (B, R) log π_old
    ref_logp = token_logprobs(response_logits(reference, seq, attn, P), y, tau) * mask  # (B, R) log π_SFT, same τ
    old_values = response_values(value_model, seq, attn, P) * mask  # (B, R) V(s_t)
    rewards = per_token_rewards(scores, old_logp, ref_logp, mask, beta)  # (B, R)
    adv, returns = gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)  # (B, R) each
    if cfg.whiten_advantages:
        adv = whiten(adv, mask)
    kl_k1, kl_k3 = kl_estimators(old_logp, ref_logp, mask)
    stats = {"kl": kl_k1.item(), "kl_k3": kl_k3.item(), "entropy": masked_mean(entropy(logits, tau), mask).item(),
             "explained_variance": explained_variance(old_values, returns, mask),
             # sampling and the forward pass must agree (same τ, same model)
             "logprob_gap": ((rollout.sample_logprobs - old_logp).abs() * mask).max().item()}
    return Batch(seq, attn, P, y, mask, old_logp, old_values, adv, returns, stats)


def update(batch: Batch, *, policy, value_model, optimizer, cfg: PPOConfig, generator: torch.Generator,
           pretrain_ids: torch.Tensor | None = None, iteration: int = 0) -> dict:
    """Step 6: cfg.ppo_epochs passes over the batch in cfg.minibatches shuffled minibatches, one Adam step each on

        L = L^CLIP(ϕ) + c_1·L^V  (+ γ_ptx·L^ptx(ϕ))                        (policy_loss, value_loss, ptx_loss)

    with log π_ϕ(y_t|·) recomputed at temperature τ and each model's gradient norm clipped. Checks the losses
    before every step (a NaN is never applied). Returns the mean of each loss and diagnostic over the steps.
    """
    device, P, tau = batch.sequences.device, batch.prompt_length, cfg.temperature
    ptx_len = min(cfg.ptx_seq_len or policy.config.block_size, policy.config.block_size)
    sums = dict.fromkeys(("policy_loss", "value_loss", "ptx_loss", "clipfrac", "approx_kl", "value_clipfrac"), 0.0)
    n_steps = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(batch), generator=generator).to(device)
        for rows in order.split(len(batch) // cfg.minibatches):
            mb = batch.rows(rows)
            logits = response_logits(policy, mb.sequences, mb.attention_mask, P)  # (b, R, V)
            logp = token_logprobs(logits, mb.responses, tau)  # (b, R) log π_ϕ, with grad
            pg_loss, clipfrac, approx_kl = policy_loss(logp, mb.old_logp, mb.advantages, mb.mask, cfg.clip_range)
            values = response_values(value_model, mb.sequences, mb.attention_mask, P)  # (b, R) V(s_t), with grad
            vf_loss, vf_clipfrac = value_loss(values, mb.old_values, mb.returns, mb.mask, cfg.clip_range_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            if cfg.ptx_coef > 0:  # PPO-ptx: + γ_ptx·(−log π_RL(x)) on pre-training text
                pt = _pretrain_batch(pretrain_ids, cfg.ptx_batch_size, ptx_len, generator).to(device)  # (b, T)
                pt_loss = ptx_loss(policy, pt)
                loss = loss + cfg.ptx_coef * pt_loss
                sums["ptx_loss"] += pt_loss.item()
            check_finite(iteration, {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "loss": loss.item()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(policy, value_model)   # under torchrun: the mean over the processes' rows
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.grad_clip)
            optimizer.step()
            for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("clipfrac", clipfrac),
                               ("approx_kl", approx_kl), ("value_clipfrac", vf_clipfrac)):
                sums[key] += value.item()
            n_steps += 1
    return {key: total / n_steps for key, total in sums.items()}


def _pretrain_batch(pretrain_ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """batch_size random windows of seq_len tokens from the 1-D pre-training stream -> (batch_size, seq_len)."""
    assert pretrain_ids.numel() > seq_len, "train_ppo checks that the stream is longer than a window"
    starts = torch.randint(0, pretrain_ids.numel() - seq_len, (batch_size,), generator=generator)  # (b,)
    windows = starts[:, None] + torch.arange(seq_len)[None, :]  # (b, T) positions in the stream
    return pretrain_ids[windows.to(pretrain_ids.device)]  # (b, T)


_MAY_BE_NAN = {"explained_variance"}  # NaN when all returns are equal: undefined, not diverged


def check_finite(iteration: int, stats: dict) -> None:
    """Stop at the first NaN / inf: a diverged policy only gets worse, and the caller keeps its last good checkpoint."""
    for name, value in stats.items():
        if name not in _MAY_BE_NAN and isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(
                f"iteration {iteration}: {name} is {value}; PPO diverged. Lower cfg.lr (1e-5..2e-5 is safe), "
                "check the reward scale, and restart from the last good checkpoint"
            )


# ----------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------


def train_ppo(policy, prompts: list[list[int]], cfg: PPOConfig, *, reference, reward_model, value_model, tokenizer,
              pretrain_ids: torch.Tensor | None = None, eval_fn=None, progress: bool = True, callback=None):
    """Run PPO (PPO-ptx when cfg.ptx_coef > 0), InstructGPT step 3, on the policy's device.

    policy        π_RL: a trainable copy of the SFT model, trained in place
    prompts       the prompt distribution D: token-id lists in the chat format (tokenizer.encode_chat_prompt)
    reference     π_SFT, the KL anchor; frozen here (requires_grad_(False))
    reward_model  r_θ, forward(idx, attention_mask) -> (B,); frozen here
    value_model   V, a trainable copy of the reward model, token_values(idx, attention_mask) -> (B, T); trained in
                  place: after the run it is the critic of the returned policy
    tokenizer     gives eos_token_id and pad_token_id
    pretrain_ids  1-D LongTensor token stream for the ptx term (required when cfg.ptx_coef > 0)
    eval_fn       eval_fn(rollout) -> dict of extra statistics logged every iteration, never trained on (e.g. the
                  gold labeler's score of the responses: evaluate.rollout_gold)
    callback      callback(iteration, stats) after every iteration

    Returns (policy, history); history is a dict of lists, one entry per iteration. Writes no files.
    Raises FloatingPointError naming the iteration and the statistic at the first NaN / inf.
    """
    from tqdm.auto import tqdm

    _check_arguments(policy, prompts, cfg, reference, reward_model, value_model, pretrain_ids)
    reference.requires_grad_(False)
    reward_model.requires_grad_(False)
    models = (policy, reference, reward_model, value_model)
    was_training = [m.training for m in models]
    for model in models:  # dropout OFF throughout: with it, π and π_old would differ before any update
        model.eval()      # (gradients still flow in eval mode)
    device = next(policy.parameters()).device
    # One Adam, two models. Adam is invariant to the loss scale per parameter, so with separate policy and value
    # networks vf_coef only matters through gradient clipping and ε; value_lr is the real value knob.
    optimizer = make_optimizer([(policy, cfg.lr), (value_model, cfg.value_lr or cfg.lr)], betas=(0.9, 0.999),
                               eps=cfg.adam_eps)
    kl_ctl = (AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.init_kl_coef))
    cpu_gen = torch.Generator().manual_seed(cfg.seed)  # prompts, minibatch order, ptx windows (alike in every process)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + distributed.rank())  # token sampling
    distributed.broadcast_parameters(policy, value_model)   # under torchrun: every process starts from rank 0's
    history: dict[str, list] = {}
    bar = tqdm(range(cfg.iterations), desc="PPO", disable=not (progress and distributed.is_main()))
    for iteration in bar:
        stats, t0 = {"beta": kl_ctl.value}, time.perf_counter()
        ro = rollout(policy, prompts, cfg, tokenizer, cpu_gen, sample_gen)  # 1. x ~ D, y ~ π_RL(·|x)
        stats["time_generate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r_theta, scores = score(ro, reward_model, cfg.missing_eos_penalty)  # 2. r_θ(x, y)
        batch = advantages(ro, scores, policy=policy, reference=reference, value_model=value_model,  # 3.-5.
                           beta=kl_ctl.value, cfg=cfg)
        stats.update(rm_reward=r_theta.mean().item(), score=scores.mean().item(), **batch.stats,
                     response_length=batch.mask.sum(1).mean().item(), ended_fraction=ro.ended.float().mean().item())
        if eval_fn is not None:
            stats.update(eval_fn(ro))
        stats = global_stats(stats)   # under torchrun: the whole batch's, so β adapts to the global KL
        stats["time_score"] = time.perf_counter() - t0
        check_finite(iteration, stats)
        t0 = time.perf_counter()
        stats.update(global_stats(update(batch, policy=policy, value_model=value_model, optimizer=optimizer,  # 6.
                                         cfg=cfg, generator=cpu_gen, pretrain_ids=pretrain_ids, iteration=iteration)))
        stats["time_update"] = time.perf_counter() - t0
        check_finite(iteration, stats)
        kl_ctl.update(stats["kl"], n_steps=cfg.batch_size)  # 7. adapt β towards the target KL
        for key, value in stats.items():
            history.setdefault(key, []).append(value)
        bar.set_postfix({key: f"{stats[key]:.3f}" for key in ("rm_reward", "gold", "kl", "beta") if key in stats})
        if callback is not None:
            callback(iteration, stats)
    for model, mode in zip(models, was_training):
        model.train(mode)
    return policy, distributed.broadcast_object(history)   # every process returns the main process's history


def global_stats(stats: dict) -> dict:
    """Under torchrun, the logged statistics of the whole batch: each process's value averaged over the processes
    (their shares are equal: train_ppo checks it), logprob_gap their maximum; timings and β stay as they are."""
    if not distributed.is_distributed():
        return stats
    keys = [k for k, v in stats.items() if isinstance(v, float) and not k.startswith("time_") and k != "beta"]
    device = distributed.collective_device()
    mean = distributed.all_reduce_mean(torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device))
    out = {**stats, **dict(zip(keys, mean.tolist()))}
    if "logprob_gap" in stats:   # a bound, not an average: the largest gap of any process
        gap = torch.tensor([stats["logprob_gap"]], dtype=torch.float64, device=device)
        out["logprob_gap"] = distributed.all_reduce(gap, op="max").item()
    return out


def _check_arguments(policy, prompts, cfg, reference, reward_model, value_model, pretrain_ids) -> None:
    """Friendly errors for the mistakes train_ppo can see before it starts."""
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("train_ppo got no prompts; pass token-id lists, e.g. "
                         "[encode_chat_prompt(tokenizer, p) for p in world.prompts('train')]")
    if not all(isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p) for p in prompts):
        raise ValueError(f"prompts must be non-empty token-id lists (encode_chat_prompt(tokenizer, text)); "
                         f"got a {type(prompts[0]).__name__}")
    shares = distributed.world_size() * cfg.minibatches
    if distributed.is_distributed() and cfg.batch_size % shares:
        raise ValueError(f"under torchrun each of the {distributed.world_size()} processes samples an equal share of "
                         f"the batch and splits it into {cfg.minibatches} minibatches: batch_size = {cfg.batch_size} "
                         f"must be a multiple of {shares}")
    longest = max(len(p) for p in prompts)
    if longest + cfg.max_new_tokens > policy.config.block_size:
        raise ValueError(
            f"the longest prompt is {longest} tokens; with max_new_tokens={cfg.max_new_tokens} that exceeds the "
            f"model's context of {policy.config.block_size}; lower cfg.max_new_tokens or use a larger block_size"
        )
    if _share_parameters(policy, reference):
        raise ValueError("policy and reference share parameters (the same model, or a shallow copy.copy): the policy "
                         "is trained in place; pass policy=copy.deepcopy(sft).requires_grad_(True), reference=sft")
    if _share_parameters(value_model, reward_model) or _share_parameters(value_model, policy):
        raise ValueError("value_model must be its own copy (copy.deepcopy(reward_model).requires_grad_(True)): "
                         "it is trained in place")
    for name, model in (("policy", policy), ("value_model", value_model)):
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"{name} has no trainable parameters (a copy of a frozen model?); "
                             f"call {name}.requires_grad_(True)")
    devices = {p.device for m in (policy, reference, reward_model, value_model) for p in m.parameters()}
    if len(devices) > 1:
        raise ValueError(f"the four models are on different devices {sorted(map(str, devices))}; move them all to "
                         "one, e.g. model.to(device)")
    if cfg.ptx_coef > 0:
        ptx_len = min(cfg.ptx_seq_len or policy.config.block_size, policy.config.block_size)
        if pretrain_ids is None or pretrain_ids.numel() <= ptx_len:
            raise ValueError(f"cfg.ptx_coef > 0 (PPO-ptx) needs pretrain_ids, a 1-D LongTensor of pre-training tokens "
                             f"longer than a window of {ptx_len} tokens (cfg.ptx_seq_len)")


def _share_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True if a and b hold any of the same parameter storage (the same model, a shallow copy, or tied weights)."""
    return bool({p.data_ptr() for p in a.parameters()} & {p.data_ptr() for p in b.parameters()})
