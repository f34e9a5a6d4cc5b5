"""Direct preference optimisation (DPO, Rafailov et al. 2023): RLHF without a reward model and without sampling.

PPO maximises the KL-regularised objective of InstructGPT (ppo.py):

    max_π  E_{x, y~π}[ r(x, y) ] − β·KL(π(·|x) ‖ π_ref(·|x))

whose optimum has a closed form (Rafailov et al., eq. 4):  π*(y|x) = π_ref(y|x)·exp(r(x, y)/β) / Z(x).
Solved for the reward, r(x, y) = β·log(π*(y|x)/π_ref(y|x)) + β·log Z(x): every policy π defines an *implicit
reward* r̂(x, y) = β·log(π(y|x)/π_ref(y|x)), and Z(x) cancels in a comparison of two answers to the same prompt.
So the reward model's pairwise loss (reward.pairwise_loss), with r̂ in place of r_θ, trains the policy directly:

    L_DPO(π) = −E_{(x, y_w, y_l)} log σ( β·[ (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)) ] )

  π_ref   the frozen SFT model (the KL anchor, as in PPO)
  β       the same β as PPO's KL coefficient: small β lets π move far from π_ref, large β holds it near
  y_w     the preferred answer of a pair, y_l the other one

The data are InstructGPT's K-ranked comparisons, used exactly as the reward model uses them: all C(K,2) pairs of a
prompt are one batch element, their losses averaged per prompt (`dpo_loss` calls `reward.pairwise_loss`).
log π(y|x) is the sum of the answer's token log-probabilities: minus SFT's summed loss on the same example
(`sft.sft_example` masks the prompt), so DPO is SFT that pushes the winner's likelihood up and the loser's down,
relative to π_ref. What it saves: no reward model to query, no value model, no sampling — one forward and backward
pass per answer. What it gives up: it learns only from the fixed answers in the comparisons (off-policy), and its
implicit reward can be over-optimised like any other (Rafailov et al. 2024), which the gold labeler can check.

Logged every step (the implicit reward, as TRL logs it): r̂ of the chosen and of the rejected answers, their
margin, and the accuracy (fraction of pairs with r̂_w > r̂_l). With π = π_ref every r̂ is 0 and the loss is log 2.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf.model import make_optimizer, token_logprobs
from minirlhf.ppo import _share_parameters
from minirlhf.reward import pairwise_loss
from minirlhf.sft import collate, sft_example


@dataclass
class DPOConfig:
    beta: float = 0.1            # β of the KL-regularised objective (Rafailov et al.: 0.1; 0.5 in their summaries)
    lr: float = 2e-5             # Adam learning rate (the paper: 1e-6 for 6B models; a toy model takes more, like PPO)
    epochs: int = 1              # passes over the comparisons (the RM, from the same data, overfits after one)
    batch_prompts: int = 8       # comparisons per step, each bringing all of its C(K,2) pairs (as RewardConfig)
    adam_eps: float = 1e-5       # as PPO's
    grad_clip: float = 1.0       # max global gradient norm
    eval_every: int = 0          # steps between validation measurements (0: only at the end of each epoch)
    seed: int = 0                # the order of the comparisons

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta = {self.beta}: β must be > 0 (the implicit reward is β·log π/π_ref; "
                             "typical values 0.01..1)")
        if not self.lr > 0:
            raise ValueError(f"DPOConfig.lr = {self.lr}: the learning rate must be > 0 (e.g. 1e-5..5e-5)")
        for name in ("epochs", "batch_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPOConfig.{name} = {getattr(self, name)}: must be >= 1")
        if self.eval_every < 0:
            raise ValueError(f"DPOConfig.eval_every = {self.eval_every}: must be >= 0 (0 = at the end of each epoch)")


# ----------------------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------------------


def dpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, rankings: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """L_DPO over each prompt's C(K,2) pairs: the reward model's pairwise loss on the implicit reward.

    logp, ref_logp: (N, K) log π(y_k|x) and log π_ref(y_k|x) of each prompt's K answers (summed over tokens).
    rankings: (N, K) answer indices BEST FIRST, −1 padded at the end for prompts with fewer answers
    (reward.pairwise_loss's format). Returns (loss with grad, stats): stats are detached scalars of the implicit
    reward r̂ = β·log(π/π_ref) over all pairs: accuracy (r̂_w > r̂_l), chosen (mean r̂_w), rejected (mean r̂_l),
    margin (chosen − rejected).
    """
    implicit = beta * (logp - ref_logp)                                    # (N, K) r̂(x, y_k)
    loss, accuracy = pairwise_loss(implicit, rankings)                     # −1/C(K,2)·Σ log σ(r̂_w − r̂_l), per prompt
    K = rankings.shape[1]
    better, worse = torch.triu_indices(K, K, offset=1, device=rankings.device)   # rank i beats rank j > i
    winners, losers = rankings[:, better], rankings[:, worse]              # (N, M) answer indices, M = C(K,2)
    valid = ((winners >= 0) & (losers >= 0)).float()                       # (N, M) the pair exists
    with torch.no_grad():
        r_w = implicit.gather(1, winners.clamp(min=0))                     # (N, M) r̂(x, y_w)
        r_l = implicit.gather(1, losers.clamp(min=0))                      # (N, M) r̂(x, y_l)
        chosen, rejected = (r_w * valid).sum() / valid.sum(), (r_l * valid).sum() / valid.sum()
    return loss, {"accuracy": accuracy, "chosen": chosen, "rejected": rejected, "margin": chosen - rejected}


def answer_logprobs(model, tokenizer, comparisons: Sequence) -> torch.Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) of every answer of every comparison, at temperature 1: (N, K_max),
    0 in the padding slots of prompts with fewer answers. With grad if enabled.

    Each answer is encoded as the reward model encodes it (chat prompt + answer + EOS if it ended) and its prompt
    is masked as in SFT (`sft.sft_example`): the sum runs over the answer's tokens only, EOS included.
    """
    examples, widths = [], []
    for c in comparisons:
        examples += [sft_example(tokenizer, c.prompt, r, e) for r, e in zip(c.responses, c.ended)]
        widths.append(len(c.responses))
    device = next(model.parameters()).device
    ids, labels, mask = (t.to(device) for t in collate(examples, tokenizer.pad_token_id, model.config.block_size))
    logits, _ = model(ids, attention_mask=mask)                            # (ΣK, T, V)
    target = labels != -100                                                # (ΣK, T) position t predicts an answer token
    logp = token_logprobs(logits, labels.clamp(min=0))                     # (ΣK, T) log π(next token)
    flat = (logp * target).sum(1)                                          # (ΣK,) log π(y|x)
    out = flat.new_zeros(len(comparisons), max(widths))                    # (N, K_max)
    start = 0
    for n, k in enumerate(widths):
        out[n, :k] = flat[start:start + k]
        start += k
    return out


def rankings_of(comparisons: Sequence, device=None) -> torch.Tensor:
    """(N, K_max) long: each comparison's ranking (best first), −1 padded (reward.pairwise_loss's format)."""
    K = max(c.k for c in comparisons)
    out = torch.full((len(comparisons), K), -1, dtype=torch.long)
    for n, c in enumerate(comparisons):
        out[n, :c.k] = torch.tensor(c.ranking, dtype=torch.long)
    return out.to(device)


def batch_loss(policy, reference, tokenizer, comparisons: Sequence, beta: float) -> tuple[torch.Tensor, dict]:
    """dpo_loss on a batch of comparisons: π's log-probs with grad, π_ref's without."""
    with torch.no_grad():
        ref_logp = answer_logprobs(reference, tokenizer, comparisons)      # (N, K)
    logp = answer_logprobs(policy, tokenizer, comparisons)                 # (N, K) with grad
    return dpo_loss(logp, ref_logp, rankings_of(comparisons, logp.device), beta)


@torch.no_grad()
def evaluate_dpo(policy, reference, tokenizer, comparisons: Sequence, beta: float, batch_prompts: int = 32) -> dict:
    """The DPO loss and implicit-reward statistics over held-out comparisons, averaged per comparison."""
    totals, n = dict.fromkeys(("loss", "accuracy", "chosen", "rejected", "margin"), 0.0), 0
    for i in range(0, len(comparisons), batch_prompts):
        batch = comparisons[i:i + batch_prompts]
        loss, stats = batch_loss(policy, reference, tokenizer, batch, beta)
        for key, value in (("loss", loss), *stats.items()):
            totals[key] += value.item() * len(batch)
        n += len(batch)
    return {key: value / n for key, value in totals.items()}


# ----------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------


def train_dpo(policy, data: tuple[Sequence, Sequence | None], cfg: DPOConfig, *, reference, tokenizer,
              progress: bool = True, callback=None):
    """Minimise L_DPO over cfg.epochs passes of the training comparisons, on the policy's device.

    policy     π: a trainable copy of the SFT model, trained in place
    data       (train_comparisons, val_comparisons): comparisons.Comparison records (K answers ranked, best first);
               val may be None
    reference  π_ref, the frozen SFT model; frozen here (requires_grad_(False))
    callback   callback(step, stats) after every step

    Dropout is off throughout (π and π_ref must agree before the first step: loss log 2). Returns (policy,
    history): per step: step, loss, accuracy, chosen, rejected, margin; per validation (every cfg.eval_every steps
    and after each epoch, when val comparisons are given): val_step, val_loss, val_accuracy, val_chosen,
    val_rejected, val_margin, seconds.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be (train_comparisons, val_comparisons); the second may be None")
    train, val = data
    if not train:
        raise ValueError("no training comparisons; DPO learns from ranked answers (comparisons.load_comparisons)")
    if _share_parameters(policy, reference):
        raise ValueError("policy and reference share parameters (the same model, or a shallow copy.copy): the policy "
                         "is trained in place; pass policy=copy.deepcopy(sft).requires_grad_(True), reference=sft")
    if not any(p.requires_grad for p in policy.parameters()):
        raise ValueError("policy has no trainable parameters (a copy of a frozen model?); call "
                         "policy.requires_grad_(True)")
    reference.requires_grad_(False)
    was_training = policy.training, reference.training
    policy.eval(), reference.eval()   # no dropout: π = π_ref exactly at the start
    optimizer = make_optimizer([(policy, cfg.lr)], betas=(0.9, 0.999), eps=cfg.adam_eps)
    rng = random.Random(cfg.seed)
    history = {key: [] for key in ("step", "loss", "accuracy", "chosen", "rejected", "margin", "val_step",
                                   "val_loss", "val_accuracy", "val_chosen", "val_rejected", "val_margin", "seconds")}
    start_time, step = time.perf_counter(), 0

    def validate() -> dict:
        if not val or (history["val_step"] and history["val_step"][-1] == step):
            return {}
        stats = {f"val_{k}": v for k, v in evaluate_dpo(policy, reference, tokenizer, val, cfg.beta).items()}
        for key, value in (("val_step", step), *stats.items(), ("seconds", time.perf_counter() - start_time)):
            history[key].append(value)
        return stats

    steps_per_epoch = math.ceil(len(train) / cfg.batch_prompts)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="DPO", disable=not progress)
    for _ in range(cfg.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_prompts):
            loss, stats = batch_loss(policy, reference, tokenizer, [train[j] for j in order[i:i + cfg.batch_prompts]],
                                     cfg.beta)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"DPO step {step}: the loss is {loss.item()}; lower cfg.lr (1e-5..5e-5)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            stats = {"loss": loss.item(), **{k: v.item() for k, v in stats.items()}}
            for key, value in (("step", step), *stats.items()):
                history[key].append(value)
            if (cfg.eval_every and step % cfg.eval_every == 0) or i + cfg.batch_prompts >= len(order):
                stats.update(validate())
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", margin=f"{stats['margin']:.3f}")
            if callback is not None:
                callback(step, stats)
    bar.close()
    policy.train(was_training[0]), reference.train(was_training[1])
    return policy, history
