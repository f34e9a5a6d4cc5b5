"""InstructGPT step 1: supervised fine-tuning (SFT) on labeler demonstrations.

Ouyang et al. 2022, §3.5: "We fine-tune GPT-3 on our labeler demonstrations using supervised learning. We trained
for 16 epochs, using a cosine learning rate decay, and residual dropout of 0.2. We do our final SFT model selection
based on the RM score on the validation set. ... our SFT models overfit on validation loss after 1 epoch; however,
training for more epochs helps both the RM score and human preference ratings."

The loss is the pre-training loss restricted to the response: the prompt's tokens are context, not targets
(label −100), so the model learns to *answer*, not to write questions.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf import distributed
from minirlhf.model import GPT, make_optimizer, pad_right
from minirlhf.pretrain import causal_lm_loss, cosine_lr, optimizer_step
from minirlhf.tokenizer import encode_chat_prompt
from minirlhf.validate import check_integers, check_numbers


@dataclass
class SFTConfig:
    epochs: int = 16             # paper: 16 epochs
    batch_size: int = 16
    lr: float = 3e-4             # peak LR; cosine decay to lr·min_lr_ratio over all epochs (paper: cosine decay)
    min_lr_ratio: float = 0.0
    dropout: float = 0.2         # paper: residual dropout 0.2 (only while fine-tuning)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        """Every number in its range, or a ValueError naming the field and the range (before any training)."""
        check_integers(self, epochs=0, batch_size=1)   # 0 epochs: the pre-trained model, as "SFT"
        check_numbers(self, lr=">", grad_clip=">", weight_decay="≥")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"SFTConfig.min_lr_ratio={self.min_lr_ratio!r}: give a number in [0, 1]")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SFTConfig.dropout={self.dropout!r}: give a probability in [0, 1)")


def sft_example(tokenizer, prompt, response: str, ended: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of chat(prompt) + response (+ EOS) and the labels: −100 on the prompt, the next token elsewhere.

    prompt: a user message (str) or a world Prompt; a multi-turn prompt's earlier turns are context (−100) too.
    """
    prompt_ids = encode_chat_prompt(tokenizer, prompt)
    response_ids = tokenizer.encode(response, add_special_tokens=False) + ([tokenizer.eos_token_id] if ended else [])
    if not response_ids:
        raise ValueError(f"empty response for prompt {getattr(prompt, 'text', prompt)!r}")
    ids = prompt_ids + response_ids
    # labels[t] is the target for position t: the token at t+1, counted only where t+1 is a response token.
    labels = [-100] * (len(prompt_ids) - 1) + response_ids + [-100]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, block_size: int):
    """Right-pad a list of (ids, labels) into tensors (B, T) with an attention mask; padding is never a target."""
    ids, mask = pad_right([x for x, _ in examples], pad_id, block_size)
    labels, _ = pad_right([y for _, y in examples], -100, block_size)
    return ids, labels, mask


def masked_sft_loss(model: GPT, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean −log π(y_t | x, y_<t) over response tokens only (prompt positions carry label −100)."""
    logits, _ = model(ids, attention_mask=mask)
    return causal_lm_loss(logits, labels)


@torch.no_grad()
def validation_loss(model: GPT, tokenizer, examples: list[tuple[list[int], list[int]]], batch_size: int = 32) -> float:
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        ids, labels, mask = collate(examples[i:i + batch_size], tokenizer.pad_token_id, model.config.block_size)
        n = int((labels != -100).sum())
        total += masked_sft_loss(model, ids.to(device), labels.to(device), mask.to(device)).item() * n
        count += n
    return total / count


def train_sft(model: GPT, data: tuple[list, list | None], cfg: SFTConfig, *, tokenizer, eval_fn=None,
              progress: bool = True, callback=None) -> tuple[GPT, dict]:
    """Fine-tune on (prompt_text, response) pairs, on the model's device; keep the best epoch. Returns (model, history).

    data: (demonstrations, val_demonstrations), each a list of (prompt, response); val may be None. A prompt is a
    user message or a world Prompt (multi-turn prompts keep their history: `tokenizer.chat_prompt`).
    eval_fn(model) -> float, if given, scores the model after every epoch (e.g. mean RM score or gold score of
    sampled answers on validation prompts); the paper selects the final SFT model by RM score, so with eval_fn the
    epoch with the highest score is kept, else the one with the lowest validation loss, else the last.
    callback(epoch, stats) after every epoch (and for epoch 0, the starting point); stats: val_loss, score.
    history: step, train_loss (per step); epoch, val_loss, score, seconds, selected (per epoch, epoch 0 = the
    model before fine-tuning; `selected` is True for the kept epoch only).
    Under torchrun (minirlhf.distributed) each process trains on its share of every batch and only the main one
    validates and calls eval_fn; every process keeps the epoch that its scores select.
    """
    pair_of_lists = isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], str)
    if not pair_of_lists or (data[0] and isinstance(data[0][0], str)):
        raise ValueError("data must be (demonstrations, val_demonstrations): two lists of (prompt_text, response), "
                         "the second may be None")
    demonstrations, val_demonstrations = data
    if not demonstrations:
        raise ValueError("no demonstrations: SFT needs at least one (prompt, response) pair")
    device = next(model.parameters()).device
    train = [sft_example(tokenizer, p, r) for p, r in demonstrations]
    val = [sft_example(tokenizer, p, r) for p, r in val_demonstrations] if val_demonstrations else None
    ddp_model = distributed.wrap(model)   # the model itself in one process; DistributedDataParallel under torchrun
    main = distributed.is_main()          # the process that validates and shows progress
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer([(model, cfg.lr)], cfg.weight_decay)
    total_steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    history = {"step": [], "train_loss": [], "epoch": [], "val_loss": [], "score": [], "seconds": []}
    snapshots, step, start = [], 0, time.perf_counter()

    def record_epoch(epoch: int) -> None:
        stats = {"val_loss": validation_loss(model, tokenizer, val) if val and main else float("nan"),
                 "score": float(eval_fn(model)) if eval_fn and main else float("nan")}
        for key, value in (("epoch", epoch), *stats.items(), ("seconds", time.perf_counter() - start)):
            history[key].append(value)
        snapshots.append(copy.deepcopy(model.state_dict()))
        if callback is not None:
            callback(epoch, stats)

    record_epoch(0)   # the starting point: the pre-trained model
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="SFT", disable=not (progress and main)):
        model.train()
        model.set_dropout(cfg.dropout)
        order = torch.randperm(len(train), generator=generator).tolist()
        for i in range(0, len(order), cfg.batch_size):
            lr = cosine_lr(step, total_steps, cfg.lr, cfg.lr * cfg.min_lr_ratio)
            batch = [train[j] for j in order[i:i + cfg.batch_size]]
            mine = distributed.shard(batch)   # this process's examples (all of them in one process)
            # a process left without an example trains on one at weight 0: DDP needs every process's backward
            ids, labels, mask = collate(mine or batch[:1], tokenizer.pad_token_id, model.config.block_size)
            with distributed.autocast(device):
                loss = masked_sft_loss(ddp_model, ids.to(device), labels.to(device), mask.to(device))
            loss = distributed.scale_for_mean(loss, _targets(mine), _targets(batch))   # the batch's mean gradient
            optimizer_step(model, optimizer, loss, lr, cfg.grad_clip, f"SFT epoch {epoch}, step {step}")
            history["step"].append(step)
            history["train_loss"].append(distributed.all_reduce_mean(loss.detach()).item())
            step += 1
        model.set_dropout(model.config.dropout)
        model.eval()
        record_epoch(epoch)

    history = distributed.broadcast_object(history)   # the main process's scores select the epoch everywhere
    best = _best_epoch(history, cfg.epochs, by_score=eval_fn is not None, by_val_loss=val is not None)
    history["selected"] = [e == best for e in range(len(snapshots))]
    model.load_state_dict(snapshots[best])
    model.eval()
    return model, history


def _targets(examples: list[tuple[list[int], list[int]]]) -> int:
    """How many response tokens (labels other than −100) the examples have: the loss's denominator."""
    return sum(sum(label != -100 for label in labels) for _, labels in examples)


def _best_epoch(history: dict, epochs: int, by_score: bool, by_val_loss: bool) -> int:
    """Highest score, else lowest validation loss, else the last epoch; epoch 0 (not fine-tuned) only if epochs = 0."""
    candidates = range(1, epochs + 1) if epochs > 0 else range(1)
    if by_score:
        return max(candidates, key=lambda e: history["score"][e])
    if by_val_loss:
        return min(candidates, key=lambda e: history["val_loss"][e])
    return candidates[-1]
