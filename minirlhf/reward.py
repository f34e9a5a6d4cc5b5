"""The reward model: InstructGPT step 2 (Ouyang et al. 2022, §3.5 "Reward modeling (RM)").

"Starting from the SFT model with the final unembedding layer removed, we trained a model to take in a
prompt and response, and output a scalar reward." Labelers ranked K = 4..9 responses per prompt; every one
of the C(K,2) pairs is a comparison, and the loss is

    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l) ~ D} [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]

"we train on all C(K,2) comparisons from each prompt as a single batch element": each prompt's K responses
go through the model ONCE (K forward passes, not K(K−1) of them), and the pairs of one prompt are averaged
together, so that a prompt with many pairs does not dominate and the model does not overfit to it (§3.5).
"At the end of training, we normalize the reward model using a bias so that the labeler demonstrations
achieve a mean score of 0 before doing RL": that is `normalize_reward`.

Toy-scale lessons (docs/calibration.md): the head starts with std 1/√(d+1) and learns faster than the
trunk (`head_lr_mult`); a zero head at the trunk's learning rate stayed at loss log 2 = 0.693.

Beyond the paper: its labelers also flagged each output ("Hallucination", ...; world/gold.py FLAGS). A reward model
built with `flags` has a second linear head that predicts those flags from the same last-token features, and with
`RewardConfig.flag_coef` > 0 it trains on them too (binary cross-entropy, added to the ranking loss). The reward
itself is still the scalar head: the flags only teach the trunk to notice what they mark (docs/calibration.md).

Beyond the paper too: a reward model built with `surprise=λ` > 0 keeps a frozen copy of the SFT model (the reference,
with its unembedding) and reads how surprised it is by the answer: s(x, y) = max_t −log π_SFT(y_t | x, y_<t), the
answer's least expected token. The reward is r_θ(x, y) = w·h_last + b − λ·s(x, y) with λ fixed (a prior, not
learned: the comparisons barely move it), and w, b and the trunk learn from the comparisons what s does not say.
A wrong fact is the one token the SFT model did not expect ("bobo likes blue" where it knows red),
which a small trunk's last-token read-out often misses (docs/calibration.md, "The SFT model's surprise").
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from minirlhf import distributed
from minirlhf.model import GPT, GPTConfig, last_token_index, make_optimizer, pad_right, token_logprobs
from minirlhf.tokenizer import ASSISTANT, SPECIAL_IDS, encode_chat_prompt
from minirlhf.validate import check_integers, check_numbers
from minirlhf.world.gold import FLAGS

# ----------------------------------------------------------------------------------------------------------
# The model


READOUTS = ("last", "sum")   # where the head's values become r_θ(x, y): see RewardModel.forward


def answer_surprise(reference: GPT, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """s(x, y) = max_t −log π_ref(y_t | x, y_<t) over each row's answer tokens: (B,), no gradient.

    The answer is every real token after the row's last `<|assistant|>` (its `<|endoftext|>` included); a row whose
    answer is empty has surprise 0. Rows without `<|assistant|>` are refused: they are not (prompt, answer) pairs.
    """
    B, T = idx.shape
    positions = torch.arange(T, device=idx.device).expand(B, T)
    last_assistant = torch.where(idx == SPECIAL_IDS[ASSISTANT], positions, -1).max(dim=1).values   # (B,)
    if (last_assistant < 0).any():
        bad = int((last_assistant < 0).nonzero()[0, 0])
        raise ValueError(f"row {bad} has no {ASSISTANT} token: a reward model with surprise scores chat-formatted "
                         "(prompt, answer) rows (reward.encode_response)")
    with torch.no_grad():
        logits, _ = reference(idx, attention_mask=attention_mask)                # (B, T, V)
        surprise = -token_logprobs(logits[:, :-1], idx[:, 1:])                     # (B, T−1): token t+1's −log p
    answer = positions[:, 1:] > last_assistant[:, None]                            # (B, T−1) token t+1 is the answer's
    if attention_mask is not None:
        answer = answer & attention_mask[:, 1:].bool()
    return (surprise * answer).max(dim=1).values                                   # (B,) surprise ≥ 0, so 0 if empty


class RewardModel(nn.Module):
    """r_θ(x, y): a GPT trunk (the SFT model, unembedding unused) + a linear head, read at the last real token.

    readout "last" (InstructGPT, the course default): the head at the last real token, `<|endoftext|>` for an answer
    that ended. readout "sum": the head summed over every real token, a per-token reward Σ_t w·h_t (an experiment:
    docs/calibration.md, "Reading the reward at every token"). The prompt's tokens add the same amount to every answer
    of a prompt (the trunk is causal), so their part cancels in every pairwise comparison.
    """

    def __init__(self, config: GPTConfig, head_std: float | None = None, readout: str = "last", flags: Sequence = (),
                 surprise: float = 0.0):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown reward readout {readout!r}; valid: {', '.join(READOUTS)}")
        unknown = [f for f in flags if f not in FLAGS]
        if unknown or len(set(flags)) != len(flags):
            raise ValueError(f"flags {list(flags)}: give distinct labeler flags from {', '.join(FLAGS)}")
        self.config = config
        self.readout = readout
        self.flags = tuple(flags)
        self.trunk = GPT(config)  # its lm_head is never called: "the final unembedding layer removed"
        self.head = nn.Linear(config.n_embd, 1)  # hidden state (C,) -> scalar reward
        # std 1/√(d+1): rewards start at O(1) and differ between responses, so the loss has a gradient to follow
        self.head_std = float(head_std) if head_std is not None else 1.0 / math.sqrt(config.n_embd + 1)
        nn.init.normal_(self.head.weight, mean=0.0, std=self.head_std)
        nn.init.zeros_(self.head.bias)
        # the labeler's flags, one logit each, read where "last" reads r_θ (None without flags)
        self.flag_head = nn.Linear(config.n_embd, len(self.flags)) if self.flags else None
        # λ > 0: a frozen copy of the SFT model, whose surprise s(x, y) costs λ per nat (None: λ = 0)
        self.surprise = surprise
        check_numbers(self, surprise="≥")
        self.surprise = float(surprise)
        self.reference = GPT(config).requires_grad_(False) if self.surprise else None
        # subtracted from every reward; set by normalize_reward so the demonstrations' mean reward is 0
        self.register_buffer("reward_bias", torch.zeros(()))

    @classmethod
    def from_gpt(cls, gpt: GPT, head_std: float | None = None, readout: str = "last", flags: Sequence = (),
                 surprise: float = 0.0) -> RewardModel:
        """A reward model whose trunk is a copy of `gpt` (InstructGPT starts the RM from the SFT model); with
        surprise > 0, its frozen reference is another copy."""
        rm = cls(gpt.config, head_std=head_std, readout=readout, flags=flags, surprise=surprise)
        rm.trunk.load_state_dict(gpt.state_dict())
        if surprise:
            rm.reference.load_state_dict(gpt.state_dict())
        return rm.to(next(gpt.parameters()).device)

    def checkpoint_extra(self) -> dict:
        """Constructor arguments besides the GPTConfig, stored so checkpoint.load can rebuild this model."""
        return {"head_std": self.head_std, "readout": self.readout, "flags": list(self.flags),
                "surprise": self.surprise}

    def train(self, mode: bool = True) -> RewardModel:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()   # frozen: the SFT model as it was, never in training mode
        return self

    def token_values(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head at every position, minus reward_bias: (B, T). PPO's value model V(x, y_<t) reads this."""
        h = self.trunk.hidden_states(idx, attention_mask=attention_mask)   # (B, T, C) after the final LayerNorm
        return self.head(h).squeeze(-1) - self.reward_bias                  # (B, T)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, with_flags: bool = False):
        """r_θ(x, y) for each row, read as `readout` says (left or right padding alike). Returns (B,); with_flags:
        (rewards (B,), flag logits (B, F)), the flags read at the last real token (the model needs `flags`)."""
        if with_flags and self.flag_head is None:
            raise ValueError("this reward model has no flag head: build it with flags=..., e.g. flags=('hallucination',)")
        h = self.trunk.hidden_states(idx, attention_mask=attention_mask)   # (B, T, C) after the final LayerNorm
        values = self.head(h).squeeze(-1)                                   # (B, T)
        last = (torch.full((idx.shape[0],), idx.shape[1] - 1, device=idx.device) if attention_mask is None
                else last_token_index(attention_mask))                      # (B,) the LAST REAL token
        if self.readout == "sum":                                           # Σ_t over the real tokens
            real = values if attention_mask is None else values * attention_mask.to(values.dtype)
            rewards = real.sum(dim=1) - self.reward_bias                    # (B,)
        else:
            rewards = values.gather(1, last.unsqueeze(1)).squeeze(1) - self.reward_bias   # (B,)
        if self.reference is not None:                                      # − λ·s(x, y)
            rewards = rewards - self.surprise * answer_surprise(self.reference, idx, attention_mask)
        if not with_flags:
            return rewards
        return rewards, self.flag_head(h[torch.arange(idx.shape[0], device=idx.device), last])   # (B,), (B, F)


# ----------------------------------------------------------------------------------------------------------
# The loss: all C(K,2) pairs of a prompt are one batch element


def pairwise_loss(rewards: torch.Tensor, rankings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−1/C(K,2) · Σ_{pairs} log σ(r_w − r_l), averaged over prompts; plus the pairwise accuracy.

    rewards: (N, K) r_θ(x, y_k) for each prompt's K responses.
    rankings: (N, K) long, response indices BEST FIRST (rankings[n, 0] is the labeler's favourite).
      Prompts with fewer responses (mixed K in one batch) pad their ranking with −1 at the END
      (e.g. [2, 0, 1, -1] for K=3 in a batch of width 4); those slots of `rewards` are ignored.
    Returns (loss, accuracy): loss a scalar with grad; accuracy (detached) = fraction of all pairs
      with r_w > r_l.
    """
    if rewards.dim() != 2 or rankings.shape != rewards.shape:
        raise ValueError(f"rewards must be (N, K) and rankings the same shape; got rewards "
                         f"{tuple(rewards.shape)} and rankings {tuple(rankings.shape)}")
    _check_rankings(rankings)
    N, K = rewards.shape
    real = torch.arange(K, device=rewards.device) < (rankings >= 0).sum(dim=1, keepdim=True)  # (N, K) y_k exists
    if not torch.isfinite(rewards[real]).all():   # a NaN loss would quietly make a NaN reward model
        bad = int((real & ~torch.isfinite(rewards)).nonzero()[0, 0])
        raise FloatingPointError(f"pairwise_loss: the rewards of prompt {bad} of the batch are not finite "
                                 f"({rewards[bad][real[bad]].tolist()}): the reward model diverged; lower "
                                 "RewardConfig.lr")
    better, worse = torch.triu_indices(K, K, offset=1, device=rewards.device)  # (M,) ranks i < j: i beats j, M = C(K,2)
    winners, losers = rankings[:, better], rankings[:, worse]                  # (N, M) response indices
    valid = (winners >= 0) & (losers >= 0)                                     # (N, M) pair exists
    r_w = rewards.gather(1, winners.clamp(min=0))                              # (N, M) r_θ(x, y_w)
    r_l = rewards.gather(1, losers.clamp(min=0))                               # (N, M) r_θ(x, y_l)
    log_p = F.logsigmoid(r_w - r_l)                                            # (N, M) log σ(r_w − r_l)
    pairs_per_prompt = valid.sum(dim=1)                                        # (N,) C(K_n, 2)
    per_prompt = (log_p * valid).sum(dim=1) / pairs_per_prompt                 # (N,) mean over its pairs
    loss = -per_prompt.mean()
    accuracy = ((r_w > r_l) & valid).sum().float() / valid.sum()
    return loss, accuracy.detach()


def _check_rankings(rankings: torch.Tensor) -> None:
    """Each row: a permutation of range(K_n), K_n >= 2, then −1 padding."""
    if rankings.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"rankings must be an integer (long) tensor of response indices, got {rankings.dtype}")
    K = rankings.shape[1]
    real = rankings >= 0                                                       # (N, K)
    counts = real.sum(dim=1, keepdim=True)                                     # (N, 1) K_n
    slots = torch.arange(K, device=rankings.device).expand_as(rankings)        # (N, K)
    prefix = slots < counts                                                    # where real entries belong
    expected = torch.where(prefix, slots, K)                                   # sorted: 0..K_n-1, then K
    got = torch.where(real, rankings, K).sort(dim=1).values
    ok = (real == prefix).all(dim=1) & (got == expected).all(dim=1) & (rankings >= -1).all(dim=1)
    if not ok.all():
        bad = int((~ok).nonzero()[0])
        raise ValueError(f"rankings[{bad}] = {rankings[bad].tolist()} is not a permutation of range(K) "
                         "(best first), padded with -1 at the end for prompts with fewer responses")
    if (counts < 2).any():
        raise ValueError("a ranking has fewer than 2 responses; a comparison needs at least 2")


# ----------------------------------------------------------------------------------------------------------
# Tokenising (prompt, response) pairs and scoring them


def encode_response(tokenizer, prompt, response: str, ended: bool) -> list[int]:
    """ids of chat_prompt(x) + ids of y + [EOS] if the response ended (the contract's sequence layout).

    prompt: a world Prompt, a prompt dict ({"text": ..., "history": ...}) or a user message; history included.
    """
    ids = encode_chat_prompt(tokenizer, prompt)
    ids = ids + tokenizer.encode(response, add_special_tokens=False)
    return ids + [tokenizer.eos_token_id] if ended else ids


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _score_rows(rm: RewardModel, tokenizer, rows: list[list[int]], with_flags: bool = False):
    """r_θ for already-tokenised rows, one forward pass (with grad if enabled). Returns (len(rows),), and with_flags
    the flag logits (len(rows), F) too."""
    ids, mask = pad_right(rows, tokenizer.pad_token_id, rm.config.block_size, _device(rm))
    if with_flags:   # only a RewardModel has flags; an ensemble is scored without the argument
        return rm(ids, attention_mask=mask, with_flags=True)
    return rm(ids, attention_mask=mask)


@torch.no_grad()
def score_responses(rm: RewardModel, tokenizer, prompts: Sequence, responses: Sequence[str],
                    ended: Sequence[bool], batch_size: int = 64) -> torch.Tensor:
    """r_θ(x_i, y_i) for each (prompt, response, ended) triple, in eval mode, batched. Returns (N,) on CPU.

    prompts: world Prompts, prompt dicts or user-message strings (one per response).
    """
    if not (len(prompts) == len(responses) == len(ended)):
        raise ValueError(f"got {len(prompts)} prompts, {len(responses)} responses and {len(ended)} ended "
                         "flags; pass one of each per response")
    rows = [encode_response(tokenizer, p, r, e) for p, r, e in zip(prompts, responses, ended)]
    was_training = rm.training
    rm.eval()
    scores = [_score_rows(rm, tokenizer, rows[i:i + batch_size]).float().cpu()
              for i in range(0, len(rows), batch_size)]
    rm.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)


# ----------------------------------------------------------------------------------------------------------
# Training on comparisons


@dataclass
class RewardConfig:
    epochs: int = 1              # InstructGPT trains the RM for a single epoch: it overfits after one (§3.5)
    lr: float = 1e-4             # trunk learning rate (paper: 9e-6 for the 6B RM; a tiny model takes more)
    head_lr_mult: float = 10.0   # the fresh head learns this many times faster (docs/calibration.md: 10-20x)
    batch_prompts: int = 8       # prompts per step; each brings all of its C(K,2) pairs (paper: 64)
    weight_decay: float = 0.0    # AdamW decay on weight matrices only
    grad_clip: float = 1.0       # global-norm clipping
    seed: int = 0                # shuffling order
    eval_every: int = 0          # steps between validation accuracies (0: only at the end of each epoch)
    eval_batch_prompts: int = 32  # prompts per forward pass when measuring validation accuracy
    flag_coef: float = 0.0       # weight of the labeler-flag loss (needs a RewardModel with flags; 0: rankings only)

    def __post_init__(self):
        """Every number in its range, or a ValueError naming the field and the range (before any training)."""
        check_integers(self, epochs=1, batch_prompts=1, eval_every=0, eval_batch_prompts=1)
        check_numbers(self, lr=">", head_lr_mult="≥", weight_decay="≥", grad_clip="≥", flag_coef="≥")   # grad_clip 0: no clipping


def comparison_batch(rm: RewardModel, tokenizer, comparisons: Sequence, flag_loss: bool = False):
    """Forward each comparison's K responses once: rewards (N, K_max) and rankings (N, K_max), −1 padded.
    flag_loss: also the binary cross-entropy of the RM's flag logits against the labeler's flags, every response
    weighing the same (a third value, a scalar)."""
    rows, widths = [], []
    for c in comparisons:
        rows += [encode_response(tokenizer, c.prompt, r, e) for r, e in zip(c.responses, c.ended)]
        widths.append(len(c.responses))
    if flag_loss:
        flat, flag_logits = _score_rows(rm, tokenizer, rows, with_flags=True)   # (Σ K_n,), (Σ K_n, F)
    else:
        flat = _score_rows(rm, tokenizer, rows)                            # (Σ K_n,)
    K = max(widths)
    rewards = flat.new_zeros(len(comparisons), K)                         # (N, K_max)
    rankings = torch.full((len(comparisons), K), -1, dtype=torch.long, device=flat.device)
    start = 0
    for n, (c, k) in enumerate(zip(comparisons, widths)):
        rewards[n, :k] = flat[start:start + k]
        rankings[n, :k] = torch.tensor(c.ranking, dtype=torch.long)
        start += k
    if not flag_loss:
        return rewards, rankings
    marks = torch.tensor([[c.flags[name][j] for name in _flag_names(rm)] for c in comparisons for j in range(c.k)],
                         dtype=torch.float32, device=flag_logits.device)   # (Σ K_n, F) the labeler's 0/1 flags
    return rewards, rankings, F.binary_cross_entropy_with_logits(flag_logits.float(), marks)


def _flag_names(rm) -> tuple:
    return getattr(rm, "module", rm).flags   # under DistributedDataParallel the RewardModel is rm.module


def train_reward_model(rm: RewardModel, data: tuple[Sequence, Sequence | None], cfg: RewardConfig, *, tokenizer,
                       progress: bool = True, callback=None) -> tuple[RewardModel, dict]:
    """Minimise the pairwise loss over `cfg.epochs` passes of the training comparisons, on the RM's device.

    data: (train_comparisons, val_comparisons); val may be None. Returns (rm, history), trained in place.
    callback(step, stats) after every step; stats: loss, accuracy (and val_accuracy, val_gold_accuracy when measured).
    history: step, loss, accuracy (per step, vs the stored noisy ranking); val_step, val_accuracy,
    val_gold_accuracy, seconds (every `eval_every` steps and after each epoch, vs the noisy ranking and vs the
    noise-free gold order; seconds since the start); flag_loss (per step, with cfg.flag_coef > 0).
    Under torchrun (minirlhf.distributed) each process scores its share of every batch's prompts and only the
    main one validates; every process returns its history.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("data must be (train_comparisons, val_comparisons); the second may be None")
    train_comparisons, val_comparisons = data
    if len(train_comparisons) == 0:
        raise ValueError("no training comparisons; sample some with comparisons.sample_comparisons")
    if cfg.flag_coef:
        _check_flags(rm, train_comparisons)
    start_time = time.perf_counter()
    device = _device(rm)
    ddp_rm = distributed.wrap(rm)   # the model itself in one process; DistributedDataParallel under torchrun
    main = distributed.is_main()    # the process that validates and shows progress
    # the fresh head learns head_lr_mult times faster than the trunk (a zero-gradient start otherwise stalls)
    heads = [rm.head] + ([rm.flag_head] if rm.flag_head is not None else [])
    optimizer = make_optimizer([(rm.trunk, cfg.lr)] + [(h, cfg.lr * cfg.head_lr_mult) for h in heads], cfg.weight_decay)
    rng = random.Random(cfg.seed)
    history = {"step": [], "loss": [], "accuracy": [], "val_step": [], "val_accuracy": [], "val_gold_accuracy": [],
               "seconds": [], **({"flag_loss": []} if cfg.flag_coef else {})}

    def validate(step: int, stats: dict) -> None:
        if main and val_comparisons and (not history["val_step"] or history["val_step"][-1] != step):
            val = pairwise_accuracy(rm, val_comparisons, tokenizer, cfg.eval_batch_prompts)  # leaves rm in train mode
            stats.update(val_accuracy=val["accuracy"], val_gold_accuracy=val["gold_accuracy"])
            for key, value in (("val_step", step), ("val_accuracy", val["accuracy"]),
                               ("val_gold_accuracy", val["gold_accuracy"]),
                               ("seconds", time.perf_counter() - start_time)):
                history[key].append(value)

    steps_per_epoch = math.ceil(len(train_comparisons) / cfg.batch_prompts)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="reward model", disable=not (progress and main))
    step = 0
    rm.train()
    for _ in range(cfg.epochs):
        order = list(range(len(train_comparisons)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_prompts):
            batch = [train_comparisons[i] for i in order[start:start + cfg.batch_prompts]]
            mine = distributed.shard(batch)   # this process's prompts (all of them in one process)
            # a process left without a prompt scores one at weight 0: DDP needs every process's backward
            with distributed.autocast(device):   # rewards, rankings: (N, K)
                if cfg.flag_coef:   # and the flags' BCE, a scalar
                    rewards, rankings, flag_loss = comparison_batch(ddp_rm, tokenizer, mine or batch[:1], flag_loss=True)
                else:
                    rewards, rankings = comparison_batch(ddp_rm, tokenizer, mine or batch[:1])
            loss, accuracy = pairwise_loss(rewards.float(), rankings)
            if cfg.flag_coef:   # + flag_coef · BCE(flag logits, the labeler's flags)
                loss = loss + cfg.flag_coef * flag_loss
                history["flag_loss"].append(distributed.all_reduce_mean(flag_loss.detach()).item())
            loss = distributed.scale_for_mean(loss, len(mine), len(batch))   # the batch's mean gradient
            accuracy = distributed.all_reduce_mean(distributed.scale_for_mean(accuracy, _pairs(mine), _pairs(batch)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(rm.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            stats = {"loss": distributed.all_reduce_mean(loss.detach()).item(), "accuracy": accuracy.item()}
            for key in ("step", "loss", "accuracy"):
                history[key].append(step if key == "step" else stats[key])
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.2f}")
            if (cfg.eval_every and step % cfg.eval_every == 0) or start + cfg.batch_prompts >= len(order):
                validate(step, stats)   # every eval_every steps and at the end of each epoch
            if callback is not None:
                callback(step, stats)
    bar.close()
    rm.eval()
    return rm, distributed.broadcast_object(history)   # every process returns the main process's history


def _check_flags(rm: RewardModel, comparisons: Sequence) -> None:
    """flag_coef > 0 needs a flag head and, on every comparison, the labeler's marks for each of its flags."""
    if not rm.flags:
        raise ValueError("RewardConfig.flag_coef > 0 but the reward model has no flags: build it with "
                         "flags=('hallucination',) (world/gold.py FLAGS)")
    for i, c in enumerate(comparisons):
        missing = [name for name in rm.flags if name not in c.flags]
        if missing:
            raise ValueError(f"training comparison {i} has no labeler flag(s) {missing}: comparisons collected before "
                             "the labeler flagged responses cannot train a flag head; collect them again, or set "
                             "flag_coef=0")


def _pairs(comparisons: Sequence) -> int:
    """How many pairs the comparisons hold: Σ C(K_n, 2), the accuracy's denominator."""
    return sum(c.k * (c.k - 1) // 2 for c in comparisons)


@torch.no_grad()
def pairwise_accuracy(rm: RewardModel, comparisons: Sequence, tokenizer, batch_prompts: int = 32) -> dict:
    """Fraction of pairs the RM orders like the labeler (noisy ranking) and like the gold scores (no noise).

    Returns {"accuracy": vs stored ranking, "gold_accuracy": vs gold order (gold ties skipped), "pairs": n}.
    The labeler's own agreement with the gold order (comparisons.ceiling_of) bounds "accuracy" from above.
    """
    was_training = rm.training
    rm.eval()
    right = right_gold = pairs = pairs_gold = 0
    for start in range(0, len(comparisons), batch_prompts):
        batch = comparisons[start:start + batch_prompts]
        rewards, _ = comparison_batch(rm, tokenizer, batch)               # (N, K_max)
        for n, c in enumerate(batch):
            r = rewards[n].tolist()
            for i, w in enumerate(c.ranking):                             # w is ranked above every l after it
                for l in c.ranking[i + 1:]:
                    pairs += 1
                    right += r[w] > r[l]
                    if c.gold[w] != c.gold[l]:
                        pairs_gold += 1
                        better, worse = (w, l) if c.gold[w] > c.gold[l] else (l, w)
                        right_gold += r[better] > r[worse]
    rm.train(was_training)
    return {"accuracy": right / max(pairs, 1), "gold_accuracy": right_gold / max(pairs_gold, 1), "pairs": pairs}


@torch.no_grad()
def normalize_reward(rm: RewardModel, demonstrations: Sequence, tokenizer) -> float:
    """Set reward_bias so the demonstrations' mean reward is 0 (InstructGPT §3.5). Returns the bias.

    demonstrations: world Demonstrations (prompt, response); a demonstration always ends (EOS).
    """
    if len(demonstrations) == 0:
        raise ValueError("no demonstrations to normalise on; pass world.demonstrations()")
    rm.reward_bias.zero_()
    raw = score_responses(rm, tokenizer, [d.prompt for d in demonstrations],
                          [d.response for d in demonstrations], [True] * len(demonstrations))
    rm.reward_bias.fill_(raw.mean().item())
    return rm.reward_bias.item()
