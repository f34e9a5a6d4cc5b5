"""The whole road, stage by stage, into one run folder (`python -m minirlhf pipeline`).

    pretrained/  ->  sft/  ->  comparisons.jsonl  ->  rm/  ->  ppo/, ppo_ptx/  ->  metrics.json, report.md, *.png

Every stage reads the previous stage's checkpoint and writes its own, atomically; `--resume` skips a stage
whose output exists, so an interrupted run (Ctrl-C) keeps what it finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minirlhf.checkpoint import load_checkpoint, save_checkpoint
from minirlhf.model import GPT, get_config, pick_device
from minirlhf.pretrain import PretrainConfig, evaluate_loss, pretrain, split_stream, token_stream
from minirlhf.tokenizer import train_tokenizer
from minirlhf.world import World, WorldConfig


@dataclass
class PretrainPreset:
    steps: int
    batch_size: int
    lr: float
    vocab_size: int = 1024


# Pre-training budgets per model preset (measured on 2 CPU cores; see README's figures).
PRETRAIN_PRESETS = {
    "tiny": PretrainPreset(steps=150, batch_size=16, lr=3e-3),
    "course": PretrainPreset(steps=2000, batch_size=32, lr=3e-3),
}


def _check_preset(preset: str) -> None:
    if preset not in PRETRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRETRAIN_PRESETS)}")


def corpus_entropy_floor(documents, tokenizer) -> float:
    """The corpus's entropy per token (nats): Σ_doc H(doc) / Σ_doc tokens(doc).

    Each document records the log-probability of the random choices that generated it, so its entropy is known
    exactly; no model can have a lower expected loss per token on fresh documents from the same generator.
    """
    n_tokens = sum(len(ids) + 1 for ids in tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"])
    return sum(d.nats for d in documents) / n_tokens


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def stage_pretrain(out: Path, preset: str = "course", seed: int = 0, steps: int | None = None,
                   max_seconds: float | None = None, icl: bool = True, world: World | None = None,
                   progress: bool = True) -> Path:
    """Train the tokenizer and pre-train a GPT on the world's corpus; save the checkpoint to `out`."""
    _check_preset(preset)
    torch.manual_seed(seed)
    world = world or World(WorldConfig())
    pp = PRETRAIN_PRESETS[preset]
    documents = world.corpus()
    texts = [d.text for d in documents]
    tokenizer = train_tokenizer(texts, vocab_size=pp.vocab_size)
    stream = token_stream(tokenizer, texts)
    train_ids, val_ids = split_stream(stream)
    config = get_config(preset, vocab_size=len(tokenizer))
    device = pick_device()
    model = GPT(config).to(device)
    cfg = PretrainConfig(steps=steps or pp.steps, batch_size=pp.batch_size, lr=pp.lr, min_lr=pp.lr / 10, seed=seed,
                         max_seconds=max_seconds, eval_every=max(1, (steps or pp.steps) // 10))
    history = pretrain(model, train_ids, val_ids, cfg, device, progress=progress)
    floor = corpus_entropy_floor(documents, tokenizer)
    metrics = {"val_loss": evaluate_loss(model, val_ids), "entropy_floor": floor, "tokens": len(stream),
               "parameters": model.num_parameters(), "seconds": history["seconds"],
               "tokens_per_s": history["tokens_per_s"][-1]}
    if icl:
        from minirlhf.prompting import icl_curve, zero_shot_accuracy

        metrics["icl"] = icl_curve(model, tokenizer, world, n_episodes=100, seed=seed)
        metrics["zero_shot_home"] = zero_shot_accuracy(model, tokenizer, world, "home", n_episodes=100, seed=seed)
    save_checkpoint(out, model, tokenizer, stage="pretrained",
                    metadata={"seed": seed, "preset": preset, "metrics": metrics, "history": history})
    return out
