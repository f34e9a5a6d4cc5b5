"""Critic-free policy gradients: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024), one module.

Both optimise the same objective as PPO (ppo.py: r_θ(x, y) − β·KL(π ‖ π_SFT)) with PPO's clipped ratio, but
without a value model: instead of V(s_t) they sample G answers to each prompt and use the group as the baseline.
The advantage of answer i to a prompt, given its return R_i (the same for every token of the answer):

    GRPO   Â_i = (R_i − mean(R_1..R_G)) / (std(R_1..R_G) + ε)          (std: the unbiased one, torch's default)
    RLOO   Â_i = R_i − 1/(G−1)·Σ_{j≠i} R_j  =  G/(G−1)·(R_i − mean)    (leave-one-out: an unbiased baseline)

That is the only difference between the two (`group_advantages`). The update is PPO's clipped surrogate
(ppo.policy_loss), averaged over all the real tokens of a minibatch (Shao et al. average over each answer's tokens,
then over answers: the two weigh the tokens of short and long answers differently). The KL to π_SFT can go in one
of two places (`GRPOConfig.kl_in`, both available to either advantage):

  "reward"  as InstructGPT and ppo.py: −β·log(π/π_SFT) on every token of the reward, r_θ on the last one
            (ppo.per_token_rewards); the return is their sum, R_i = r_θ(x, y_i) − β·Σ_t log(π/π_SFT)_t, and the
            group baseline is taken on it. β is in units of the reward: the KL competes with r_θ before GRPO
            divides by the group's std. RLOO as Ahmadian et al. ran it.
  "loss"    as GRPO (Shao et al. eq. 3): R_i = r_θ(x, y_i) alone, and β·KL is added to the LOSS, per token, with
            the k3 estimator k3_t = π_SFT/π − log(π_SFT/π) − 1 ≥ 0 (Schulman, "Approximating KL"), evaluated
            at the current π, so its gradient pulls π back towards π_SFT directly. β is then in units of the
            advantage, which GRPO divides by the group's std (|Â| ~ 1): the same β is a different strength, and
            it no longer depends on the reward's scale.

No value model: what that saves and what it costs, compared with PPO.
  saves   a second network as large as the policy, its optimiser state and its forward/backward passes (about
          half of PPO's update compute and memory for the trainable models), the value loss and its clipping, and
          the value model's start (InstructGPT initialises it from the RM)
  costs   G answers per prompt to estimate a baseline (more generation for the same number of prompts); one
          advantage for every token of an answer (no per-token credit assignment: GAE's V(s_t) knew which token
          went wrong); with small G a noisy baseline; and a group whose answers all score the same gives no
          gradient at all (Â = 0, logged as `zero_std_fraction`)

One iteration of `train_grpo` (compare with ppo.py's seven steps):

  1. rollout      N prompts, G answers y ~ π(·|x) to each at temperature τ             (group_rollout)
  2. score        r_θ(x, y), the missing-EOS penalty as in PPO                          (ppo.score)
  3. KL           log π_old and log π_SFT of the sampled tokens, same τ                  (advantages)
  4. returns      R_i: the score, minus β·KL when kl_in = "reward"                       (ppo.per_token_rewards)
  5. advantages   Â_i from the group, the same for every token of answer i              (group_advantages)
  6. update       epochs × minibatches of the clipped surrogate (+ β·k3 when kl_in = "loss")   (ppo.policy_loss)

Shapes: N = prompts per iteration, G = group size, B = N·G rows (rows g·G .. g·G+G−1 answer the same prompt),
P = (left-padded) prompt length, R = (right-padded) response length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from minirlhf.model import make_optimizer, response_logits, token_logprobs
from minirlhf.ppo import (
    Rollout,
    _share_parameters,
    check_finite,
    entropy,
    kl_estimators,
    masked_mean,
    per_token_rewards,
    policy_loss,
    score,
)

ADVANTAGES = ("grpo", "rloo")
KL_PLACES = ("loss", "reward")


@dataclass
class GRPOConfig:
    iterations: int = 30             # rollouts; each = N prompts × G answers, then several updates
    prompts_per_iteration: int = 8   # N distinct prompts per rollout
    group_size: int = 4              # G answers per prompt (Shao et al.: 64; RLOO: 2..4); B = N·G answers per rollout
    advantage: str = "grpo"          # "grpo": (R − mean)/std over the group; "rloo": R − mean of the others
    kl_in: str = "loss"              # "loss": β·k3 in the loss (GRPO); "reward": −β·log(π/π_SFT) per token (InstructGPT)
    beta: float = 0.04               # β (Shao et al.: 0.04 in the loss; in the reward, ppo.py's 0.1 is comparable)
    max_new_tokens: int = 24         # answer length cap, as PPO's
    temperature: float = 1.0         # τ for sampling and every log-prob
    lr: float = 2e-5                 # as the course's PPO
    adam_eps: float = 1e-5
    ppo_epochs: int = 4              # passes over each rollout (Shao et al. take 1; 4 matches ppo.py's updates)
    minibatches: int = 2             # minibatches per pass; B must be divisible by it
    clip_range: float = 0.2          # ε of the clipped ratio
    std_eps: float = 1e-4            # ε in GRPO's (R − mean)/(std + ε): a group of equal returns gets Â = 0
    missing_eos_penalty: float | None = -1.0  # as PPOConfig: an answer without EOS scores this instead
    grad_clip: float = 1.0
    seed: int = 0                    # prompts, sampling and minibatch order

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"GRPOConfig.advantage = {self.advantage!r}; choose one of {ADVANTAGES}")
        if self.kl_in not in KL_PLACES:
            raise ValueError(f"GRPOConfig.kl_in = {self.kl_in!r}; choose 'loss' (GRPO's k3 term) or 'reward' "
                             "(InstructGPT's per-token penalty)")
        if self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size = {self.group_size}: a group baseline needs G >= 2 answers per "
                             "prompt (4 is a good start)")
        if self.prompts_per_iteration < 1 or self.iterations < 0 or self.ppo_epochs < 1:
            raise ValueError("GRPOConfig: prompts_per_iteration and ppo_epochs must be >= 1, iterations >= 0")
        if self.batch_size % self.minibatches != 0:
            raise ValueError(f"N·G = {self.prompts_per_iteration}·{self.group_size} = {self.batch_size} answers per "
                             f"rollout is not divisible by minibatches = {self.minibatches}")
        if self.temperature <= 0:
            raise ValueError(f"GRPOConfig.temperature = {self.temperature}: sampling needs a temperature > 0")
        if self.beta < 0 or not self.lr > 0:
            raise ValueError(f"GRPOConfig: beta must be >= 0 (got {self.beta}) and lr > 0 (got {self.lr})")

    @property
    def batch_size(self) -> int:
        """B = N·G answers per rollout."""
        return self.prompts_per_iteration * self.group_size


# ----------------------------------------------------------------------------------------------------------------
# The math
# ----------------------------------------------------------------------------------------------------------------


def group_advantages(returns: torch.Tensor, kind: str = "grpo", eps: float = 1e-4) -> torch.Tensor:
    """Each answer's return against its group's: returns (N, G), one row per prompt -> advantages (N, G).

    grpo  (R_i − mean_j R_j) / (std_j R_j + ε)      std unbiased (÷ (G−1)); a row of equal returns gives 0
    rloo  R_i − mean_{j≠i} R_j                      = G/(G−1)·(R_i − mean_j R_j)
    """
    if returns.dim() != 2 or returns.shape[1] < 2:
        raise ValueError(f"returns must be (N prompts, G >= 2 answers); got shape {tuple(returns.shape)}")
    G = returns.shape[1]
    mean = returns.mean(dim=1, keepdim=True)                               # (N, 1)
    if kind == "grpo":
        return (returns - mean) / (returns.std(dim=1, keepdim=True) + eps)
    if kind == "rloo":
        others = (returns.sum(dim=1, keepdim=True) - returns) / (G - 1)    # (N, G) mean of the other G−1
        return returns - others
    raise ValueError(f"unknown advantage {kind!r}; choose one of {ADVANTAGES}")


def k3_per_token(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """GRPO's KL term, per token: π_SFT/π − log(π_SFT/π) − 1 (the k3 estimator of KL(π ‖ π_SFT), ≥ 0).

    logp (with grad), ref_logp: (B, R) log-probs of the sampled tokens. ppo.kl_estimators sums the same per answer.
    """
    log_r = ref_logp - logp                                                # (B, R) log(π_SFT/π)
    return torch.expm1(log_r) - log_r                                      # expm1 = r − 1, accurate near r = 1


# ----------------------------------------------------------------------------------------------------------------
# The steps of one iteration
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def group_rollout(policy, prompts: list[list[int]], cfg: GRPOConfig, tokenizer, prompt_generator: torch.Generator,
                  sample_generator: torch.Generator) -> Rollout:
    """Step 1, as ppo.rollout but G answers per prompt, kept together: draw N = cfg.prompts_per_iteration distinct
    prompts (with replacement if there are fewer), then rows g·G .. g·G+G−1 all answer prompt g."""
    N, G = cfg.prompts_per_iteration, cfg.group_size
    if N <= len(prompts):
        chosen = torch.randperm(len(prompts), generator=prompt_generator)[:N]
    else:
        chosen = torch.randint(len(prompts), (N,), generator=prompt_generator)
    index = [i for i in chosen.tolist() for _ in range(G)]                 # (B,) the prompt of each row
    gen = policy.generate([prompts[i] for i in index], max_new_tokens=cfg.max_new_tokens,
                          temperature=cfg.temperature, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, generator=sample_generator, return_logprobs=True)
    return Rollout(index, gen.sequences, gen.attention_mask, gen.prompt_length, gen.response_ids, gen.ended,
                   gen.logprobs)


@dataclass
class GroupBatch:
    """Steps 2-5's output: what the updates need, row-aligned (B rows)."""

    sequences: torch.Tensor        # (B, P+R)
    attention_mask: torch.Tensor   # (B, P+R)
    prompt_length: int             # P
    responses: torch.Tensor        # (B, R)
    mask: torch.Tensor             # (B, R) 1 = real response token
    old_logp: torch.Tensor         # (B, R) log π_old(y_t|·), 0 at padding
    ref_logp: torch.Tensor         # (B, R) log π_SFT(y_t|·), 0 at padding
    returns: torch.Tensor          # (B,) R_i: r_θ (after the EOS penalty), − β·Σ_t log(π/π_SFT)_t if kl_in = "reward"
    advantages: torch.Tensor       # (B, R) Â_i on every real token of answer i
    stats: dict

    def rows(self, index: torch.Tensor) -> GroupBatch:
        return GroupBatch(**{k: v[index] if torch.is_tensor(v) else v for k, v in vars(self).items()})


@torch.no_grad()
def advantages(rollout: Rollout, scores: torch.Tensor, *, policy, reference, cfg: GRPOConfig) -> GroupBatch:
    """Steps 3-5: log π_old and log π_SFT of the sampled tokens, the returns R_i, and the group advantages."""
    seq, attn, P = rollout.sequences, rollout.attention_mask, rollout.prompt_length
    y, mask = rollout.responses, rollout.mask                              # (B, R) each
    logits = response_logits(policy, seq, attn, P)                        # (B, R, V)
    old_logp = token_logprobs(logits, y, cfg.temperature) * mask           # (B, R) log π_old
    ref_logp = token_logprobs(response_logits(reference, seq, attn, P), y, cfg.temperature) * mask  # log π_SFT
    if cfg.kl_in == "reward":   # R_i = Σ_t r_t = r_θ(x, y_i) − β·Σ_t log(π/π_SFT)_t
        returns = per_token_rewards(scores, old_logp, ref_logp, mask, cfg.beta).sum(1)   # (B,)
    else:                       # R_i = r_θ(x, y_i); the KL goes in the loss
        returns = scores.to(old_logp.dtype)                                # (B,)
    grouped = returns.view(-1, cfg.group_size)                             # (N, G)
    adv = group_advantages(grouped, cfg.advantage, cfg.std_eps).view(-1)   # (B,)
    kl_k1, kl_k3 = kl_estimators(old_logp, ref_logp, mask)
    stats = {"kl": kl_k1.item(), "kl_k3": kl_k3.item(), "entropy": masked_mean(entropy(logits, cfg.temperature),
                                                                               mask).item(),
             "return": returns.mean().item(),
             "zero_std_fraction": (grouped.std(dim=1) == 0).float().mean().item(),   # groups with no signal
             "logprob_gap": ((rollout.sample_logprobs - old_logp).abs() * mask).max().item()}
    return GroupBatch(seq, attn, P, y, mask, old_logp, ref_logp, returns, adv[:, None] * mask, stats)


def update(batch: GroupBatch, *, policy, optimizer, cfg: GRPOConfig, generator: torch.Generator,
           iteration: int = 0) -> dict:
    """Step 6: cfg.ppo_epochs passes in cfg.minibatches shuffled minibatches, one Adam step each on

        L = L^CLIP(π)  (+ β·mean_t k3_t  when kl_in = "loss")                 (ppo.policy_loss, k3_per_token)

    Returns the mean of each loss and diagnostic over the steps.
    """
    sums = dict.fromkeys(("policy_loss", "kl_loss", "clipfrac", "approx_kl"), 0.0)
    n_steps = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(batch.sequences), generator=generator).to(batch.sequences.device)
        for rows in order.split(len(batch.sequences) // cfg.minibatches):
            mb = batch.rows(rows)
            logits = response_logits(policy, mb.sequences, mb.attention_mask, mb.prompt_length)   # (b, R, V)
            logp = token_logprobs(logits, mb.responses, cfg.temperature)   # (b, R) log π, with grad
            pg_loss, clipfrac, approx_kl = policy_loss(logp, mb.old_logp, mb.advantages, mb.mask, cfg.clip_range)
            kl_loss = masked_mean(k3_per_token(logp, mb.ref_logp), mb.mask)  # KL(π ‖ π_SFT) per token, k3
            loss = pg_loss + cfg.beta * kl_loss if cfg.kl_in == "loss" else pg_loss
            check_finite(iteration, {"policy_loss": pg_loss.item(), "loss": loss.item()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            optimizer.step()
            for key, value in (("policy_loss", pg_loss), ("kl_loss", kl_loss), ("clipfrac", clipfrac),
                               ("approx_kl", approx_kl)):
                sums[key] += value.item()
            n_steps += 1
    return {key: total / n_steps for key, total in sums.items()}


# ----------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------


def train_grpo(policy, prompts: list[list[int]], cfg: GRPOConfig, *, reference, reward_model, tokenizer,
               eval_fn=None, progress: bool = True, callback=None):
    """Run GRPO or RLOO (cfg.advantage) with the KL in the loss or in the reward (cfg.kl_in), on the policy's device.

    policy        π: a trainable copy of the SFT model, trained in place
    prompts       token-id lists in the chat format (tokenizer.encode_chat_prompt), as train_ppo takes them
    reference     π_SFT, the KL anchor; frozen here
    reward_model  r_θ, forward(idx, attention_mask) -> (B,); frozen here
    eval_fn       eval_fn(rollout) -> dict of extra statistics logged every iteration (e.g. evaluate.rollout_gold)
    callback      callback(iteration, stats) after every iteration

    Returns (policy, history); history: a dict of lists, one entry per iteration (rm_reward, score, return, kl,
    kl_k3, entropy, zero_std_fraction, policy_loss, kl_loss, clipfrac, approx_kl, response_length, ended_fraction,
    time_generate, time_score, time_update, and eval_fn's keys). Raises FloatingPointError at the first NaN / inf.
    """
    from tqdm.auto import tqdm

    _check_arguments(policy, prompts, cfg, reference, reward_model)
    reference.requires_grad_(False)
    reward_model.requires_grad_(False)
    models = (policy, reference, reward_model)
    was_training = [m.training for m in models]
    for model in models:   # dropout off: π and π_old must agree before any update
        model.eval()
    device = next(policy.parameters()).device
    optimizer = make_optimizer([(policy, cfg.lr)], betas=(0.9, 0.999), eps=cfg.adam_eps)
    cpu_gen = torch.Generator().manual_seed(cfg.seed)                      # prompts, minibatch order
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)      # token sampling
    history: dict[str, list] = {}
    name = "GRPO" if cfg.advantage == "grpo" else "RLOO"
    bar = tqdm(range(cfg.iterations), desc=name, disable=not progress)
    for iteration in bar:
        t0 = time.perf_counter()
        ro = group_rollout(policy, prompts, cfg, tokenizer, cpu_gen, sample_gen)            # 1.
        stats = {"time_generate": time.perf_counter() - t0}
        t0 = time.perf_counter()
        r_theta, scores = score(ro, reward_model, cfg.missing_eos_penalty)                  # 2.
        batch = advantages(ro, scores, policy=policy, reference=reference, cfg=cfg)         # 3.-5.
        stats.update(rm_reward=r_theta.mean().item(), score=scores.mean().item(), **batch.stats,
                     response_length=batch.mask.sum(1).mean().item(), ended_fraction=ro.ended.float().mean().item())
        if eval_fn is not None:
            stats.update(eval_fn(ro))
        stats["time_score"] = time.perf_counter() - t0
        check_finite(iteration, stats)
        t0 = time.perf_counter()
        stats.update(update(batch, policy=policy, optimizer=optimizer, cfg=cfg, generator=cpu_gen,  # 6.
                            iteration=iteration))
        stats["time_update"] = time.perf_counter() - t0
        for key, value in stats.items():
            history.setdefault(key, []).append(value)
        bar.set_postfix({key: f"{stats[key]:.3f}" for key in ("rm_reward", "gold", "kl") if key in stats})
        if callback is not None:
            callback(iteration, stats)
    for model, mode in zip(models, was_training):
        model.train(mode)
    return policy, history


def _check_arguments(policy, prompts, cfg: GRPOConfig, reference, reward_model) -> None:
    """Friendly errors for the mistakes train_grpo can see before it starts."""
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(
            isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p) for p in prompts):
        raise ValueError("prompts must be a non-empty list of token-id lists: "
                         "[encode_chat_prompt(tokenizer, p) for p in world.prompts('train')]")
    longest = max(len(p) for p in prompts)
    if longest + cfg.max_new_tokens > policy.config.block_size:
        raise ValueError(f"the longest prompt is {longest} tokens; with max_new_tokens={cfg.max_new_tokens} that "
                         f"exceeds the model's context of {policy.config.block_size}; lower cfg.max_new_tokens")
    if _share_parameters(policy, reference):
        raise ValueError("policy and reference share parameters (the same model, or a shallow copy.copy): the policy "
                         "is trained in place; pass policy=copy.deepcopy(sft).requires_grad_(True), reference=sft")
    if not any(p.requires_grad for p in policy.parameters()):
        raise ValueError("policy has no trainable parameters (a copy of a frozen model?); "
                         "call policy.requires_grad_(True)")
