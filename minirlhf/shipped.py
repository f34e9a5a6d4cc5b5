"""The course run shipped with the repository under data/: checkpoints of every stage and their results.

Notebooks start from these, so each one runs in a minute or two instead of re-training the stages before it.
They are made by `python -m minirlhf pipeline --out runs/course` followed by `python -m minirlhf ship runs/course`.
"""

from __future__ import annotations

import json
from pathlib import Path

from minirlhf.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parent.parent / "data"   # the repository's data/ folder
CHECKPOINTS = DATA / "checkpoints"
RUN = DATA / "run"
STAGES = ("pretrained", "sft", "rm", "ppo", "ppo_ptx")


def load_stage(name: str, device=None, tokenizer=None):
    """(model, tokenizer, metadata) of a shipped stage: pretrained, sft, rm, ppo or ppo_ptx."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the shipped stages are {list(STAGES)}")
    folder = CHECKPOINTS / name
    if not folder.exists():
        raise FileNotFoundError(f"{folder} is missing: run `python -m minirlhf pipeline --out runs/course` and "
                                "`python -m minirlhf ship runs/course` to make it")
    return load_checkpoint(folder, tokenizer=tokenizer, device=device)


def load_result(name: str):
    """A shipped result file of the course run: metrics.json, evaluation.json, beta_sweep.json, report.md, ..."""
    path = RUN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; available: {sorted(p.name for p in RUN.glob('*'))}")
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
