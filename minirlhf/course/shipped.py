"""The course run shipped with the repository under data/: checkpoints of every stage and their results.

Notebooks start from these, so each one runs in a minute or two instead of re-training the stages before it.
They are made by `python -m minirlhf pipeline --out runs/course` followed by `python -m minirlhf ship runs/course`
(`ship_run`, below: what it writes is what `load_stage` and `load_result` read).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from minirlhf.checkpoint import RESERVED_METADATA, load_checkpoint, save_checkpoint, write_text_atomic

DATA = Path(__file__).resolve().parents[2] / "data"   # the repository's data/ folder
CHECKPOINTS = DATA / "checkpoints"
RUN = DATA / "run"
STAGES = ("pretrained", "sft", "rm", "ppo", "ppo_ptx")   # the checkpoints shipped under data/checkpoints/
RESULT_FILES = ("metrics.json", "evaluation.json", "overoptimisation.json", "report.md", "comparisons_round1.jsonl",
                "comparisons_round2.jsonl", "comparisons_val.jsonl")   # shipped under data/run/, with the figures (*.png)
SEED_FILES = {"metrics.json": "seeds.json", "report.md": "seeds.md"}   # a run of several seeds: their aggregate


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
    """A shipped result file of the course run (one of RESULT_FILES or a figure): JSON is parsed, text returned."""
    path = RUN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; available: {sorted(p.name for p in RUN.glob('*'))}")
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


def ship_run(run: Path, data: Path = Path("data")) -> list[Path]:
    """Copy a finished run's checkpoints and results under data/ so the notebooks can start from any stage.

    A run of several seeds (seed-S/ folders): the first seed's, plus the seeds' metrics.json and report.md as
    data/run/seeds.json and seeds.md.

    Weights are stored as float16 (half the bytes; loading casts them back to float32), which keeps the
    whole data/ folder small enough to live in the repository.
    """
    run, data = Path(run), Path(data)
    seeds = sorted(run.glob("seed-*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)
    if seeds and not (run / "pretrained").exists():   # `pipeline --seeds`: the first seed, and the aggregate
        written = ship_run(seeds[0], data)
        for name, shipped_name in SEED_FILES.items():
            if (run / name).exists():
                written.append(write_text_atomic(data / "run" / shipped_name, (run / name).read_text()))
        return written
    missing = [s for s in STAGES if not (run / s / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run: missing {missing}; run the pipeline first")
    written = []
    for name in STAGES:
        model, tokenizer, meta = load_checkpoint(run / name)
        meta = {k: v for k, v in meta.items() if k not in RESERVED_METADATA}   # save_checkpoint writes these anew
        meta["weights_dtype"] = "float16"
        written.append(save_checkpoint(data / "checkpoints" / name, model.half(), tokenizer, stage=name, metadata=meta))
    (data / "run").mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES + tuple(p.name for p in run.glob("*.png")):
        if not (run / name).exists():
            continue
        if name.endswith(".png"):
            tmp = data / "run" / f".{name}.tmp"
            shutil.copyfile(run / name, tmp)
            os.replace(tmp, data / "run" / name)
        else:
            write_text_atomic(data / "run" / name, (run / name).read_text())
        written.append(data / "run" / name)
    return written
