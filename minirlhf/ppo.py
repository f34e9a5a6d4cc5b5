"""InstructGPT step 3: optimise the policy against the reward model with PPO (Ouyang et al. 2022, §3.5).

The objective (the seed's slide; InstructGPT eq. 2):

    objective(ϕ) = E_{(x,y)~π_RL}[ r_θ(x, y) − β·log(π_RL(y|x) / π_SFT(y|x)) ]  +  γ·E_{x~D_pretrain}[ log π_RL(x) ]

  r_θ(x, y)   the reward model's scalar score of the whole response            (reward.RewardModel)
  β           the KL coefficient: keeps π_RL close to π_SFT, so the RM is not over-optimised
  γ           the pre-training mix coefficient: γ = 0 is "PPO", γ > 0 is "PPO-ptx"

The KL term is paid per token, the score once at the end of the response (Ziegler et al. 2019; Stiennon et al.
2020), and PPO (Schulman et al. 2017) with generalised advantage estimation (GAE, Schulman et al. 2016) maximises
the sum. Every implementation detail sits in this file, in the order it runs, in the spirit of CleanRL and of
"The N Implementation Details of RLHF with PPO" (Huang et al. 2023):

  1. rollout      sample responses y ~ π_RL(·|x) at temperature T                          (train_ppo)
  2. score        r_θ(x, y); a fixed penalty for responses that never end                (train_ppo)
  3. KL           log-probs of y under π_RL (the "old" policy) and π_SFT, same T         (kl_penalty)
  4. rewards      −β·KL on every token, + r_θ on the last token                          (per_token_rewards)
  5. advantages   GAE(γ, λ) with the value model V(s_t), then whitening                  (gae_advantages, whiten)
  6. update       ppo_epochs × minibatches of clipped policy + clipped value losses       (policy_loss, value_loss)
                  (+ γ_ptx · pre-training NLL)                                           (ptx_loss)
  7. adapt β      towards a target KL                                                    (AdaptiveKLController)

Shapes: B = prompts in the rollout, P = (left-padded) prompt length, R = (right-padded) response length,
V = vocabulary size. `mask` is the response mask (B, R): 1 for real response tokens (the EOS included), 0 for padding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minirlhf.model import last_token_index

# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    iterations: int = 100            # rollouts (PPO "iterations"); each = one batch of prompts, then several updates
    batch_size: int = 64             # prompts per rollout (InstructGPT: 512; toy scale, 2 CPU cores)
    max_new_tokens: int = 24         # response length cap; responses cut here did not "end" (see missing_eos_penalty)
    temperature: float = 1.0         # T: sampling AND every log-prob (π_RL, π_SFT, old, new) use logits / T
    lr: float = 1.5e-5               # policy learning rate (InstructGPT: 9.65e-6; CALIBRATION: 1e-5..2e-5 held, 5e-5 collapsed)
    value_lr: float | None = None    # value-model learning rate; None = lr (with Adam, vf_coef barely matters: see below)
    adam_eps: float = 1e-5           # Adam ε (the RLHF PPO codebases use 1e-5, not torch's 1e-8)
    ppo_epochs: int = 4              # passes over each rollout (InstructGPT / Stiennon et al.: 4)
    minibatches: int = 2             # minibatches per epoch (batch_size must be divisible by it)
    clip_range: float = 0.2          # ε: ratio π/π_old clipped to [1-ε, 1+ε] (Schulman et al. 2017)
    clip_range_value: float = 0.2    # value predictions clipped to old_value ± 0.2 (lm-human-preferences)
    vf_coef: float = 0.1             # c_1: weight of the value loss (lm-human-preferences: 0.1)
    gamma: float = 1.0               # γ (discount): 1, the reward is only the episode's sum
    lam: float = 0.95                # λ of GAE (lm-human-preferences: 0.95)
    init_kl_coef: float = 0.1        # β at the start (the CALIBRATION run used 0.1; InstructGPT: 0.02)
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
    show_progress: bool = True       # tqdm bar

    def __post_init__(self):
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


def response_logits(model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Logits at the positions that PREDICT the response tokens: (B, P+R) -> (B, R, V).

    Position P−1+t predicts response token t. One forward pass over the whole sequence; only the R response
    positions go through the unembedding (the prompt's logits are never needed: ~10 % of a step saved).
    """
    h = model.hidden_states(sequences, attention_mask=attention_mask)  # (B, P+R, C)
    return model.lm_head(h[:, prompt_length - 1 : -1])  # (B, R, V)


def response_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | x, y_<t) of each given token, and the entropy of π(·| x, y_<t), at temperature T.

    logits (B, R, V) at the positions that PREDICT tokens (B, R) (see response_logits). Returns (logp, entropy),
    both (B, R). The same T must be used everywhere (sampling, old, new and reference log-probs), or the ratio
    π/π_old and the KL are measured between distributions nobody sampled from.
    """
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, R, V)
    logp = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, R)
    entropy = -(logprobs.exp() * logprobs).sum(-1)  # (B, R)  H = −Σ_v π(v) log π(v): falls as π sharpens
    return logp, entropy


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


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the real tokens (mask == 1); shift_mean=False keeps the mean (only rescales).

    x, mask (B, R) -> (B, R), 0 at padding. Whitening advantages makes the step size independent of the reward scale.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
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
    """−mean log π_RL(x) over a pre-training batch: the causal-LM NLL per token (the γ·E[log π_RL(x)] term, negated).

    batch: (B, T) token ids from the pre-training stream. Predicts tokens 1..T−1 from their prefixes. Computed at
    temperature 1: it is the pre-training objective itself, not a score of sampled responses.
    """
    logits, _ = policy(batch[:, :-1])  # (B, T−1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


# ----------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------


_MAY_BE_NAN = {"explained_variance"}  # NaN when all returns are equal: undefined, not diverged


def check_finite(iteration: int, stats: dict) -> None:
    """Stop at the first NaN / inf: a diverged policy only gets worse, and the caller keeps its last good checkpoint."""
    for name, value in stats.items():
        if name not in _MAY_BE_NAN and isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(
                f"iteration {iteration}: {name} is {value}; PPO diverged. Lower cfg.lr (1e-5..2e-5 is safe), "
                "check the reward scale, and restart from the last good checkpoint"
            )


def _encode_prompts(prompts, tokenizer) -> list[list[int]]:
    """Chat-format each world Prompt ("<|user|>text\\n<|assistant|>") and tokenize it, once."""
    from minirlhf.tokenizer import encode_chat_prompt

    return [encode_chat_prompt(tokenizer, p.text) for p in prompts]


def _pretrain_batch(pretrain_ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """batch_size random windows of seq_len tokens from the 1-D pre-training stream -> (batch_size, seq_len)."""
    if pretrain_ids.numel() <= seq_len:
        raise ValueError(
            f"pretrain_ids has {pretrain_ids.numel()} tokens but ptx needs windows of {seq_len}; "
            "pass a longer pre-training stream or a smaller cfg.ptx_seq_len"
        )
    starts = torch.randint(0, pretrain_ids.numel() - seq_len, (batch_size,), generator=generator)  # (b,)
    windows = starts[:, None] + torch.arange(seq_len)[None, :]  # (b, T) positions in the stream
    return pretrain_ids[windows.to(pretrain_ids.device)]  # (b, T)


def train_ppo(
    policy, ref_policy, reward_model, value_model, prompts, tokenizer, cfg: PPOConfig,
    device=None, world=None, pretrain_ids: torch.Tensor | None = None, callback=None,
):
    """Run PPO (or PPO-ptx when cfg.ptx_coef > 0): InstructGPT step 3.

    policy        π_RL, a copy of the SFT model (trained in place)
    ref_policy    π_SFT, frozen (only ever run under no_grad): the KL anchor
    reward_model  r_θ, frozen (idem): RewardModel, forward(idx, attention_mask) -> (B,)
    value_model   V, a copy of the reward model (trained in place): token_values(idx, attention_mask) -> (B, T)
    prompts       list of world Prompt objects (their .text is the user message)
    world         if given, the gold labeler scores every rollout (logged as "gold"; never used for training)
    pretrain_ids  1-D LongTensor token stream for the ptx term (required when cfg.ptx_coef > 0)
    callback      callback(iteration, stats) after every iteration

    Returns (policy, value_model, history): history is a dict of lists, one entry per iteration. Writes no files.
    Raises FloatingPointError naming the iteration and the statistic at the first NaN / inf.
    """
    from tqdm.auto import tqdm

    if cfg.ptx_coef > 0 and pretrain_ids is None:
        raise ValueError("cfg.ptx_coef > 0 (PPO-ptx) needs pretrain_ids, a 1-D LongTensor of pre-training tokens")
    if len(prompts) == 0:
        raise ValueError("train_ppo got no prompts; pass world.prompts('train')")
    if policy is ref_policy:
        raise ValueError("policy and ref_policy are the same object; pass policy=copy.deepcopy(sft), ref_policy=sft")
    if value_model is reward_model or value_model is policy:
        raise ValueError("value_model must be its own copy (copy.deepcopy(reward_model)): it is trained in place")
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    for model in (policy, ref_policy, reward_model, value_model):
        model.to(device)
    # Dropout OFF for all four models during the whole run: with dropout, π and π_old would differ even before
    # any update, so the ratio, the clipping and the KL would measure noise. (Gradients still flow in eval mode.)
    was_training = [m.training for m in (policy, ref_policy, reward_model, value_model)]
    for model in (policy, ref_policy, reward_model, value_model):
        model.eval()

    encoded = _encode_prompts(prompts, tokenizer)  # list of token-id lists
    block_size = policy.config.block_size
    longest = max(len(ids) for ids in encoded)
    if longest + cfg.max_new_tokens > block_size:
        raise ValueError(
            f"the longest prompt is {longest} tokens; with max_new_tokens={cfg.max_new_tokens} that exceeds the "
            f"model's context of {block_size}; lower cfg.max_new_tokens or use a larger block_size"
        )
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    ptx_len = min(cfg.ptx_seq_len or block_size, block_size)

    # One Adam, two parameter groups. Adam is invariant to the loss scale per parameter, so with separate policy
    # and value networks vf_coef only matters through gradient clipping and ε; value_lr is the real value knob.
    optimizer = torch.optim.Adam(
        [
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.lr},
            {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": cfg.value_lr or cfg.lr},
        ],
        eps=cfg.adam_eps,
    )
    kl_ctl = (
        AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon)
        if cfg.adaptive_kl else FixedKLController(cfg.init_kl_coef)
    )
    cpu_gen = torch.Generator().manual_seed(cfg.seed)  # prompts, minibatch order, ptx windows
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)  # token sampling
    B, T = cfg.batch_size, cfg.temperature
    mb_size = B // cfg.minibatches
    history: dict[str, list] = {}

    bar = tqdm(range(cfg.iterations), desc="PPO", disable=not cfg.show_progress)
    for iteration in bar:
        stats: dict[str, float] = {"beta": kl_ctl.value}

        # ---- 1. rollout: y ~ π_RL(·|x) ------------------------------------------------------------------------
        t0 = time.perf_counter()
        if B <= len(prompts):  # B distinct prompts
            idx = torch.randperm(len(prompts), generator=cpu_gen)[:B]
        else:  # fewer prompts than the batch: sample with replacement
            idx = torch.randint(len(prompts), (B,), generator=cpu_gen)
        batch_prompts = [prompts[i] for i in idx.tolist()]
        with torch.no_grad():
            gen = policy.generate(
                [encoded[i] for i in idx.tolist()], max_new_tokens=cfg.max_new_tokens, temperature=T,
                eos_token_id=eos_id, pad_token_id=pad_id, generator=sample_gen, return_logprobs=True,
            )
        seq, attn, P = gen.sequences.to(device), gen.attention_mask.to(device), gen.prompt_length  # (B, P+R)
        response = seq[:, P:]  # (B, R)
        mask = attn[:, P:].float()  # (B, R) 1 = real response token (EOS included)
        ended = torch.as_tensor(gen.ended, device=device)  # (B,)
        stats["time_generate"] = time.perf_counter() - t0

        # ---- 2.-5. score, KL, rewards, advantages: one forward per model over the whole (B, P+R) -------------
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = response_logits(policy, seq, attn, P)  # (B, R, V) at the positions predicting y_t
            old_logp, entropy = response_logprobs(logits, response, T)  # (B, R) each; recomputed: exact π_old
            ref_logits = response_logits(ref_policy, seq, attn, P)  # (B, R, V)
            ref_logp, _ = response_logprobs(ref_logits, response, T)  # (B, R) π_SFT at the same T
            old_values = value_model.token_values(seq, attention_mask=attn)[:, P - 1:-1] * mask  # (B, R) V(s_t)
            rm_score = reward_model(seq, attention_mask=attn).float()  # (B,) r_θ(x, y), read at the last real token
            score = rm_score
            if cfg.missing_eos_penalty is not None:  # a response that never ends gets a fixed bad score
                score = torch.where(ended, rm_score, torch.full_like(rm_score, cfg.missing_eos_penalty))
            old_logp, ref_logp = old_logp * mask, ref_logp * mask
            rewards = per_token_rewards(score, old_logp, ref_logp, mask, kl_ctl.value)  # (B, R)
            advantages, returns = gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)  # (B, R) each
            if cfg.whiten_advantages:
                advantages = whiten(advantages, mask)
            kl_k1, kl_k3 = kl_estimators(old_logp, ref_logp, mask)
        stats.update(
            rm_reward=rm_score.mean().item(), score=score.mean().item(), kl=kl_k1.item(), kl_k3=kl_k3.item(),
            entropy=masked_mean(entropy, mask).item(), response_length=mask.sum(1).mean().item(),
            ended_fraction=ended.float().mean().item(),
            explained_variance=explained_variance(old_values, returns, mask),
        )
        if gen.logprobs is not None:  # sampling and the forward pass must agree (same T, same model)
            stats["logprob_gap"] = ((gen.logprobs.to(device) - old_logp).abs() * mask).max().item()
        if world is not None:
            from minirlhf.world import gold_score

            texts = [tokenizer.decode(r, skip_special_tokens=True) for r in gen.response_ids]
            golds = [gold_score(world, p, t, bool(e)) for p, t, e in zip(batch_prompts, texts, ended.tolist())]
            stats["gold"] = sum(g.total for g in golds) / len(golds)
        stats["time_score"] = time.perf_counter() - t0
        check_finite(iteration, stats)

        # ---- 6. PPO updates: ppo_epochs × minibatches --------------------------------------------------------
        t0 = time.perf_counter()
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "ptx_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0,
                "value_clipfrac": 0.0}
        n_updates = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=cpu_gen)
            for start in range(0, B, mb_size):
                mb = order[start:start + mb_size].to(device)
                mb_seq, mb_attn, mb_mask = seq[mb], attn[mb], mask[mb]
                logits = response_logits(policy, mb_seq, mb_attn, P)  # (b, R, V)
                logp, _ = response_logprobs(logits, response[mb], T)  # (b, R)
                pg_loss, clipfrac, approx_kl = policy_loss(logp, old_logp[mb], advantages[mb], mb_mask, cfg.clip_range)
                values = value_model.token_values(mb_seq, attention_mask=mb_attn)[:, P - 1:-1]  # (b, R)
                vf_loss, vf_clipfrac = value_loss(values, old_values[mb], returns[mb], mb_mask, cfg.clip_range_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                if cfg.ptx_coef > 0:  # PPO-ptx: + γ·(−log π_RL(x)) on pre-training text
                    pt = _pretrain_batch(pretrain_ids, cfg.ptx_batch_size, ptx_len, cpu_gen).to(device)
                    pt_loss = ptx_loss(policy, pt)
                    loss = loss + cfg.ptx_coef * pt_loss
                    sums["ptx_loss"] += pt_loss.item()
                step = {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "loss": loss.item()}
                check_finite(iteration, step)  # before the step: never apply a NaN update
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
                torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.grad_clip)
                optimizer.step()
                sums["policy_loss"] += step["policy_loss"]
                sums["value_loss"] += step["value_loss"]
                sums["clipfrac"] += clipfrac.item()
                sums["approx_kl"] += approx_kl.item()
                sums["value_clipfrac"] += vf_clipfrac.item()
                n_updates += 1
        stats.update({k: v / n_updates for k, v in sums.items()})
        stats["time_update"] = time.perf_counter() - t0
        check_finite(iteration, stats)

        # ---- 7. adapt β towards the target KL ----------------------------------------------------------------
        kl_ctl.update(stats["kl"], n_steps=B)

        for k, v in stats.items():
            history.setdefault(k, []).append(v)
        postfix = {"rm": f"{stats['rm_reward']:.2f}", "kl": f"{stats['kl']:.2f}", "β": f"{stats['beta']:.3f}"}
        if "gold" in stats:
            postfix["gold"] = f"{stats['gold']:.2f}"
        bar.set_postfix(postfix)
        if callback is not None:
            callback(iteration, stats)

    for model, mode in zip((policy, ref_policy, reward_model, value_model), was_training):
        model.train(mode)
    return policy, value_model, history
