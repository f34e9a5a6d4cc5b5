"""GPT pre-training: the causal language-modelling objective of GPT-1 (Radford et al. 2018, eq. 1).

    L1(U) = Σ_i log P(u_i | u_{i-k}, ..., u_{i-1}; Θ)

U is the token stream of the corpus ("the internet" of the toy world) and k the context window (block_size).
We *maximise* L1, i.e. minimise the mean next-token cross-entropy −L1/N. Everything here is plain PyTorch:
a token stream, windows from it (short ones first: a sequence-length curriculum), AdamW with warm-up and cosine
decay, gradient clipping, and a history dict of lists that the plotting helpers draw. A probe (the loss on values
that a lookup episode re-queries) shows the moment the model learns to look things up in its context.
`train_pretrain` has the shape of every stage's trainer:

    train_<stage>(model, data, cfg, *, tokenizer, progress=True, callback=None) -> (model, history)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf import distributed
from minirlhf.model import GPT, make_optimizer, token_logprobs
from minirlhf.validate import check_integers, check_numbers


@dataclass
class PretrainConfig:
    steps: int = 2000            # optimiser steps
    tokens_per_step: int = 4096  # tokens per step at every context: batch = tokens_per_step // context
    # (from step, context): short windows first make the previous-token + induction circuit cheap to find, then
    # longer ones (Olsson et al. 2022: the induction head forms abruptly, early). Contexts are capped at block_size;
    # () trains at block_size throughout. Stage i reads its own token stream when data gives one per stage.
    curriculum: tuple = ((0, 32), (250, 64), (500, 128))
    lr: float = 3e-3             # peak learning rate (small model: larger LR than GPT-2's 2.5e-4)
    min_lr: float = 3e-4         # cosine decays to this
    warmup_steps: int = 100      # linear warm-up, as in GPT-1
    weight_decay: float = 0.1    # AdamW, on matrices only
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0       # global-norm clipping
    eval_every: int = 200        # steps between validation estimates
    eval_batches: int = 8        # batches of block_size windows evaluated per estimate
    probe_every: int = 50        # steps between estimates of the probe loss (when data has a probe)
    seed: int = 0
    max_seconds: float | None = None  # stop early after this many seconds (the schedule is still for `steps`)

    def __post_init__(self):
        """Every number in its range, or a ValueError naming the field and the range (before any training)."""
        check_integers(self, steps=1, tokens_per_step=1, warmup_steps=0, eval_every=1, eval_batches=1, probe_every=1)
        check_numbers(self, lr=">", grad_clip=">", min_lr="≥", weight_decay="≥", max_seconds=">")
        if not (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"PretrainConfig.betas={self.betas!r}: give Adam's (β1, β2), each in [0, 1)")


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """−L1 / N: the mean of −log P(u_i | u_{<i}) over the N predicted tokens.

    logits: (B, T, V) scores for the next token at every position; targets: (B, T), targets[:, t] = u_{t+1}.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits are {tuple(logits.shape)} but targets are {tuple(targets.shape)}; "
                         "expected logits (B, T, V) and targets (B, T)")
    mask = targets != ignore_index                                   # (B, T)
    if not mask.any():
        raise ValueError("every target is ignore_index: there is no token to predict")
    log_p_u = token_logprobs(logits, targets.clamp(min=0))          # (B, T) log P(u_i | u_{i-k..i-1})
    return -(log_p_u * mask).sum() / mask.sum()


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """Concatenate documents into one 1-D stream of token ids, each document followed by EOS (as GPT-2 did)."""
    if len(texts) == 0:
        raise ValueError("the corpus is empty: there is nothing to pre-train on")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for ids_doc in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(ids_doc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def split_stream(stream: torch.Tensor, val_fraction: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out the tail of the stream for validation."""
    n_val = max(1, int(len(stream) * val_fraction))
    return stream[:-n_val], stream[-n_val:]


def get_batch(stream: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    """Random windows: x = u_{i..i+k-1}, y = u_{i+1..i+k} (the targets are the inputs shifted by one)."""
    if len(stream) <= block_size:
        raise ValueError(f"the token stream has {len(stream)} tokens, fewer than block_size+1 = {block_size + 1}")
    starts = torch.randint(len(stream) - block_size, (batch_size,), generator=generator)
    x = torch.stack([stream[s:s + block_size] for s in starts.tolist()])          # (B, k)
    y = torch.stack([stream[s + 1:s + 1 + block_size] for s in starts.tolist()])  # (B, k)
    return x, y


def curriculum_stage(step: int, cfg: PretrainConfig, block_size: int) -> tuple[int, int]:
    """(stage, context) of the sequence-length curriculum at `step`; the context is capped at block_size."""
    stage, context = 0, block_size
    for i, (start, k) in enumerate(cfg.curriculum):
        if step >= start:
            stage, context = i, min(k, block_size)
    return stage, context


def stage_tokens(cfg: PretrainConfig, block_size: int) -> list[int]:
    """Tokens each curriculum stage reads in `cfg.steps` steps: size a fresh stream per stage with these."""
    starts = [start for start, _ in cfg.curriculum] or [0]
    if starts[0] != 0 or starts != sorted(set(starts)):
        raise ValueError(f"curriculum={cfg.curriculum}: (from step, context) pairs must start at step 0 and increase")
    ends = starts[1:] + [cfg.steps]
    needs = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        _, context = curriculum_stage(start, cfg, block_size)
        batch = max(1, cfg.tokens_per_step // context)
        steps = max(0, min(end, cfg.steps) - start)
        needs.append(steps * batch * context + 1 if steps else 0)   # +1: the last window's last target
    return needs


class StreamWindows:
    """A token stream cut into windows x = u[s:s+k], y = u[s+1:s+k+1] at s = 0, k, 2k, ..., served in a seeded
    random order, each once per pass: a fresh stream sized by `stage_tokens` is read exactly once."""

    def __init__(self, stream: torch.Tensor, context: int, generator: torch.Generator):
        if len(stream) <= context:
            raise ValueError(f"the token stream has {len(stream)} tokens, fewer than context+1 = {context + 1}")
        self.stream, self.context, self.generator = stream, context, generator
        self.order: list[int] = []

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.context
        starts = []
        for _ in range(batch_size):
            if not self.order:   # a new pass over the stream
                n_windows = (len(self.stream) - 1) // k
                self.order = (torch.randperm(n_windows, generator=self.generator) * k).tolist()
            starts.append(self.order.pop())
        x = torch.stack([self.stream[s:s + k] for s in starts])            # (B, k)
        y = torch.stack([self.stream[s + 1:s + 1 + k] for s in starts])    # (B, k)
        return x, y


def probe_batch(tokenizer, rows: list[list[tuple[str, bool]]], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (text piece, scored) pieces -> (x (N, T), y (N, T)) with y = -100 except on the scored pieces' tokens.

    Pieces are tokenized one by one (split them where the tokenizer splits words); rows longer than block_size
    tokens are dropped. The loss on y (causal_lm_loss) is then the loss on the scored pieces only.
    """
    xs, ys = [], []
    for row in rows:
        ids, targets = [], []
        for text, scored in row:
            piece = tokenizer.encode(text, add_special_tokens=False)
            ids += piece
            targets += piece if scored else [-100] * len(piece)
        if len(ids) - 1 <= block_size and any(t != -100 for t in targets[1:]):
            xs.append(ids[:-1])
            ys.append(targets[1:])
    if not xs:
        raise ValueError(f"no probe row fits in block_size={block_size} tokens")
    T = max(len(x) for x in xs)
    x = torch.tensor([x + [tokenizer.pad_token_id] * (T - len(x)) for x in xs])   # (N, T) padded on the right
    y = torch.tensor([y + [-100] * (T - len(y)) for y in ys])                     # (N, T)
    return x, y


def document_rows(tokenizer, texts: list[str], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents packed whole into rows (x (N, T), y (N, T)), each row starting with EOS; y = -100 on the padding.

    Every document is read from its start (a document longer than a row goes on in the next one), so the loss on
    these rows is the loss per token that the entropy floor bounds: each document's tokens and its EOS, once.
    """
    eos, rows, row = tokenizer.eos_token_id, [], [tokenizer.eos_token_id]
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        doc = ids + [eos]
        if len(row) + len(doc) > block_size + 1 and len(row) > 1:
            rows.append(row)
            row = [eos]
        row += doc
        while len(row) > block_size + 1:     # a long document continues in the next row
            rows.append(row[:block_size + 1])
            row = row[block_size:]
    rows.append(row)
    T = max(len(r) for r in rows) - 1
    x = torch.tensor([r[:-1] + [tokenizer.pad_token_id] * (T + 1 - len(r)) for r in rows])   # (N, T)
    y = torch.tensor([r[1:] + [-100] * (T + 1 - len(r)) for r in rows])                      # (N, T)
    return x, y


@torch.no_grad()
def rows_loss(model: GPT, rows: tuple[torch.Tensor, torch.Tensor], batch_size: int = 32,
              max_batches: int | None = None) -> float:
    """Mean NLL (nats/token) on the targets of (x, y) rows that are not -100 (right padding: causal attention
    never sees it). Used for the probe and for document-aligned validation."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x, y = rows
    total, count = 0.0, 0
    starts = list(range(0, len(x), batch_size))[:max_batches]
    for i in starts:
        logits, _ = model(x[i:i + batch_size].to(device))                     # (B, T, V)
        yb = y[i:i + batch_size].to(device)
        n = int((yb != -100).sum())
        if n:
            total += causal_lm_loss(logits, yb).item() * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


def probe_loss(model: GPT, probe: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean NLL (nats/token) on the probe's scored tokens."""
    return rows_loss(model, probe, batch_size=len(probe[0]))


def cosine_lr(step: int, steps: int, lr: float, min_lr: float = 0.0, warmup_steps: int = 0) -> float:
    """The learning rate at `step` of `steps`: linear warm-up over warmup_steps, then cosine decay from lr to min_lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


def optimizer_step(model: torch.nn.Module, optimizer, loss: torch.Tensor, lr: float, grad_clip: float,
                   where: str) -> None:
    """One step at learning rate `lr`: refuse a non-finite loss, backpropagate, clip the global norm, update."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{where}: the loss is {loss.item()}; lower the learning rate")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


@torch.no_grad()
def evaluate_loss(model: GPT, stream: torch.Tensor, batch_size: int = 32, max_batches: int | None = None) -> float:
    """Mean next-token NLL (nats/token) on consecutive windows of a stream (deterministic)."""
    was_training = model.training
    model.eval()
    k = model.config.block_size
    device = next(model.parameters()).device
    n_windows = (len(stream) - 1) // k
    if n_windows == 0:
        raise ValueError(f"the validation stream has {len(stream)} tokens, fewer than block_size+1 = {k + 1}")
    total, count = 0.0, 0
    starts = list(range(0, n_windows * k, k))
    if max_batches is not None:
        starts = starts[: max_batches * batch_size]
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        x = torch.stack([stream[s:s + k] for s in chunk]).to(device)
        y = torch.stack([stream[s + 1:s + 1 + k] for s in chunk]).to(device)
        logits, _ = model(x)
        total += causal_lm_loss(logits, y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def _check_shareable(cfg: PretrainConfig, block_size: int) -> None:
    """Under torchrun, every curriculum stage's batch must have a row for every process."""
    rows = min(max(1, cfg.tokens_per_step // min(k, block_size)) for _, k in cfg.curriculum or [(0, block_size)])
    if rows < distributed.world_size():
        raise ValueError(f"a batch of {rows} windows cannot be shared by {distributed.world_size()} processes; "
                         "start fewer (--nproc_per_node) or raise tokens_per_step")


def train_pretrain(model: GPT, data: tuple, cfg: PretrainConfig, *, tokenizer=None,
                   progress: bool = True, callback=None) -> tuple[GPT, dict]:
    """Maximise L1 on the training stream, on the model's device. Returns (model, history), trained in place.

    data: (train, val) or (train, val, probe). train: one 1-D token stream, or a list with one stream per curriculum
    stage (a fresh stream per phase of the corpus); val: a 1-D stream (see token_stream, split_stream) or (x, y)
    rows of whole documents (document_rows); probe: (x, y) from probe_batch, logged every cfg.probe_every steps.
    tokenizer: unused (data is token ids already); there so that every stage's trainer is called alike.
    callback(step, stats) after every step; stats has train_loss and lr, and val_loss at validation steps.
    history: step, train_loss, lr, context (per step); eval_step, val_loss, tokens_per_s, seconds (per validation);
    probe_step, probe_loss (per probe estimate).
    Under torchrun (minirlhf.distributed) every process draws the same batch of windows and trains on its share of
    the rows; the step is the one-process step; only the main process evaluates, and every process returns its
    history.
    """
    if not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
        raise ValueError("data must be (train_ids, val_ids) or (train_ids, val_ids, probe): 1-D token streams, "
                         "e.g. split_stream(token_stream(...))")
    train, val_ids, probe = (*data, None) if len(data) == 2 else data
    streams = list(train) if isinstance(train, (list, tuple)) else None
    n_stages = max(1, len(cfg.curriculum))
    if streams is not None and len(streams) != n_stages:
        raise ValueError(f"data has {len(streams)} training streams but the curriculum has {n_stages} stages")
    device = next(model.parameters()).device
    block_size = model.config.block_size
    _check_shareable(cfg, block_size)
    model.train()
    ddp_model = distributed.wrap(model)   # the model itself in one process; DistributedDataParallel under torchrun
    main = distributed.is_main()          # the process that evaluates and shows progress
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer([(model, cfg.lr)], cfg.weight_decay, cfg.betas)
    history = {"step": [], "train_loss": [], "lr": [], "context": [], "eval_step": [], "val_loss": [],
               "tokens_per_s": [], "seconds": [], "probe_step": [], "probe_loss": []}
    eval_batch = max(1, cfg.tokens_per_step // block_size)
    windows: dict[int, StreamWindows] = {}
    tokens = 0
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pre-train", disable=not (progress and main), mininterval=1.0)
    for step in bar:
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
        stage, context = curriculum_stage(step, cfg, block_size)
        if stage not in windows:   # a new stage of the curriculum: its stream, cut at its context
            windows[stage] = StreamWindows(train if streams is None else streams[stage], context, generator)
        x, y = windows[stage].batch(max(1, cfg.tokens_per_step // context))     # (B, context) each, every process
        x_mine, y_mine = distributed.shard(x), distributed.shard(y)            # this process's rows (all, in one)
        with distributed.autocast(device):
            logits, _ = ddp_model(x_mine.to(device))
        loss = causal_lm_loss(logits, y_mine.to(device))   # −L1/N on this batch (on this process's rows)
        loss = distributed.scale_for_mean(loss, len(x_mine), len(x))   # so that DDP's mean gradient is the batch's
        optimizer_step(model, optimizer, loss, lr, cfg.grad_clip, f"pre-training step {step}")
        tokens += y.numel()
        stats = {"train_loss": distributed.all_reduce_mean(loss.detach()).item(), "lr": lr}
        history["step"].append(step)
        history["train_loss"].append(stats["train_loss"])
        history["lr"].append(lr)
        history["context"].append(context)
        elapsed = time.perf_counter() - start
        last = step == cfg.steps - 1 or (cfg.max_seconds is not None and elapsed > cfg.max_seconds)
        if cfg.max_seconds is not None:
            last = distributed.broadcast_object(last)   # the main process's clock decides for every process
        if main and probe is not None and (step % cfg.probe_every == 0 or last):
            stats["probe_loss"] = probe_loss(model, probe)
            history["probe_step"].append(step)
            history["probe_loss"].append(stats["probe_loss"])
        if main and (step % cfg.eval_every == 0 or last):
            stats["val_loss"] = (evaluate_loss(model, val_ids, eval_batch, cfg.eval_batches)
                                 if isinstance(val_ids, torch.Tensor) else
                                 rows_loss(model, val_ids, eval_batch, cfg.eval_batches))
            model.train()
            history["eval_step"].append(step)
            history["val_loss"].append(stats["val_loss"])
            history["tokens_per_s"].append(tokens / max(elapsed, 1e-9))
            history["seconds"].append(elapsed)
            bar.set_postfix(loss=f"{stats['train_loss']:.3f}", val=f"{stats['val_loss']:.3f}")
        if callback is not None:
            callback(step, stats)
        if last:
            break
    model.eval()
    return model, distributed.broadcast_object(history)   # every process returns the main process's history
