"""GPT pre-training: the causal language-modelling objective of GPT-1 (Radford et al. 2018, eq. 1).

    L1(U) = Σ_i log P(u_i | u_{i-k}, ..., u_{i-1}; Θ)

U is the token stream of the corpus ("the internet" of the toy world) and k the context window (block_size).
We *maximise* L1, i.e. minimise the mean next-token cross-entropy −L1/N. Everything here is plain PyTorch:
a token stream, random windows from it, AdamW with warm-up and cosine decay, gradient clipping, and a
history dict that the plotting helpers draw.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minirlhf.model import GPT


@dataclass
class PretrainConfig:
    steps: int = 2000            # optimiser steps
    batch_size: int = 32         # windows per step
    lr: float = 3e-3             # peak learning rate (small model: larger LR than GPT-2's 2.5e-4)
    min_lr: float = 3e-4         # cosine decays to this
    warmup_steps: int = 100      # linear warm-up, as in GPT-1
    weight_decay: float = 0.1    # AdamW, on matrices only
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0       # global-norm clipping
    eval_every: int = 200        # steps between validation estimates
    eval_batches: int = 8        # windows × batch_size evaluated per estimate
    seed: int = 0
    max_seconds: float | None = None  # stop early after this many seconds (the schedule is still for `steps`)


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """−L1 / N: the mean of −log P(u_i | u_{<i}) over the N predicted tokens.

    logits: (B, T, V) scores for the next token at every position; targets: (B, T), targets[:, t] = u_{t+1}.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits are {tuple(logits.shape)} but targets are {tuple(targets.shape)}; "
                         "expected logits (B, T, V) and targets (B, T)")
    log_p = F.log_softmax(logits.float(), dim=-1)                    # (B, T, V) log P(· | u_{<i})
    mask = targets != ignore_index                                   # (B, T)
    if not mask.any():
        raise ValueError("every target is ignore_index: there is no token to predict")
    safe = targets.clamp(min=0)
    log_p_u = log_p.gather(-1, safe.unsqueeze(-1)).squeeze(-1)       # (B, T) log P(u_i | u_{i-k..i-1})
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


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up then cosine decay from lr to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95)):
    """AdamW with weight decay on matrices only (not on biases, LayerNorms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


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


def pretrain(model: GPT, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: PretrainConfig,
             device: torch.device | str | None = None, progress: bool = True) -> dict:
    """Maximise L1 on the training stream. Returns a history dict for plotting."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    history = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "val_loss": [], "tokens_per_s": [],
               "config": asdict(cfg)}
    tokens_per_step = cfg.batch_size * model.config.block_size
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pre-train", disable=not progress, mininterval=1.0)
    for step in bar:
        lr = lr_at(step, cfg)
        x, y = get_batch(train_ids, model.config.block_size, cfg.batch_size, generator)
        logits, _ = model(x.to(device))
        loss = causal_lm_loss(logits, y.to(device))   # −L1/N on this batch
        optimizer_step(model, optimizer, loss, lr, cfg.grad_clip, f"pre-training step {step}")
        history["step"].append(step)
        history["train_loss"].append(loss.item())
        history["lr"].append(lr)
        elapsed = time.perf_counter() - start
        last = step == cfg.steps - 1 or (cfg.max_seconds is not None and elapsed > cfg.max_seconds)
        if step % cfg.eval_every == 0 or last:
            val = evaluate_loss(model, val_ids, cfg.batch_size, cfg.eval_batches)
            model.train()
            history["eval_step"].append(step)
            history["val_loss"].append(val)
            history["tokens_per_s"].append(tokens_per_step * (step + 1) / max(elapsed, 1e-9))
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val:.3f}")
        if last:
            break
    model.eval()
    history["seconds"] = time.perf_counter() - start
    return history
