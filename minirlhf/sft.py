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
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from minirlhf.model import GPT, pad_right
from minirlhf.pretrain import causal_lm_loss, make_optimizer, optimizer_step
from minirlhf.tokenizer import encode_chat_prompt


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


def sft_example(tokenizer, prompt_text: str, response: str, ended: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of chat(prompt) + response (+ EOS) and the labels: −100 on the prompt, the next token elsewhere."""
    prompt_ids = encode_chat_prompt(tokenizer, prompt_text)
    response_ids = tokenizer.encode(response, add_special_tokens=False) + ([tokenizer.eos_token_id] if ended else [])
    if not response_ids:
        raise ValueError(f"empty response for prompt {prompt_text!r}")
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


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout probability in the model (residual, attention, embedding) to p."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = p


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


def train_sft(model: GPT, tokenizer, demonstrations: list[tuple[str, str]], cfg: SFTConfig,
              val_demonstrations: list[tuple[str, str]] | None = None, score_fn=None,
              progress: bool = True) -> tuple[GPT, dict]:
    """Fine-tune on (prompt_text, response) pairs; pick the best epoch.

    score_fn(model) -> float, if given, scores the model after every epoch (e.g. mean reward-model score or gold score
    of sampled answers on validation prompts); the paper selects the final SFT model by RM score, so when score_fn is
    given the epoch with the highest score is returned, otherwise the epoch with the lowest validation loss.
    Returns (best model, history).
    """
    if not demonstrations:
        raise ValueError("no demonstrations: SFT needs at least one (prompt, response) pair")
    device = next(model.parameters()).device
    train = [sft_example(tokenizer, p, r) for p, r in demonstrations]
    val = [sft_example(tokenizer, p, r) for p, r in val_demonstrations] if val_demonstrations else None
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    history = {"step": [], "train_loss": [], "epoch": [], "val_loss": [], "score": [], "config": asdict(cfg)}
    snapshots, step, start = [], 0, time.perf_counter()

    def record_epoch(epoch: int) -> None:
        history["epoch"].append(epoch)
        history["val_loss"].append(validation_loss(model, tokenizer, val) if val else float("nan"))
        history["score"].append(float(score_fn(model)) if score_fn else float("nan"))
        snapshots.append(copy.deepcopy(model.state_dict()))

    record_epoch(0)   # the starting point: the pre-trained model
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="SFT", disable=not progress):
        model.train()
        set_dropout(model, cfg.dropout)
        order = torch.randperm(len(train), generator=generator).tolist()
        for i in range(0, len(order), cfg.batch_size):
            lr = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / total_steps)))
            ids, labels, mask = collate([train[j] for j in order[i:i + cfg.batch_size]], tokenizer.pad_token_id,
                                        model.config.block_size)
            loss = masked_sft_loss(model, ids.to(device), labels.to(device), mask.to(device))
            optimizer_step(model, optimizer, loss, lr, cfg.grad_clip, f"SFT epoch {epoch}, step {step}")
            history["step"].append(step)
            history["train_loss"].append(loss.item())
            step += 1
        set_dropout(model, model.config.dropout)
        model.eval()
        record_epoch(epoch)

    candidates = range(1, len(snapshots)) if cfg.epochs > 0 else range(1)   # epoch 0 (pre-trained) is only a reference
    if score_fn is not None:
        best = max(candidates, key=lambda e: history["score"][e])
        history["selected_by"] = "score"
    elif val is not None:
        best = min(candidates, key=lambda e: history["val_loss"][e])
        history["selected_by"] = "val_loss"
    else:
        best, history["selected_by"] = candidates[-1], "last epoch"
    model.load_state_dict(snapshots[best])
    model.eval()
    history["best_epoch"] = history["epoch"][best]
    history["seconds"] = time.perf_counter() - start
    return model, history
