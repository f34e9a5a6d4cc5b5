"""The course run shipped with the repository under data/: checkpoints of every stage and their results.

Notebooks start from these, so each one runs in a minute or two instead of re-training the stages before it.
They are made by `python -m minirlhf pipeline --out runs/course` followed by `python -m minirlhf ship runs/course`
(`ship_run`, below: what it writes is what `load_stage` and `load_result` read).

Shipping is all or nothing. The run must be finished, intact (the checksums in its run.json) and of the course
preset. Everything is written into a temporary folder inside data/ first; then data/checkpoints and data/run are
swapped for the new ones by renames, the old ones kept aside in data/.ship-old until both new ones are in place.
A ship that fails or is interrupted leaves data/ as it was; one killed during the swap itself is rolled back by
the next `ship`. Files in those folders that ship never writes (your notes, another tool's results) are kept.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

from minirlhf.checkpoint import RESERVED_METADATA, load_checkpoint, save_checkpoint
from minirlhf.runfolder import LEFTOVER

DATA = Path(__file__).resolve().parents[2] / "data"   # the repository's data/ folder
CHECKPOINTS = DATA / "checkpoints"
RUN = DATA / "run"
STAGES = ("pretrained", "sft", "rm", "ppo", "ppo_ptx")   # the checkpoints shipped under data/checkpoints/
RESULT_FILES = ("metrics.json", "evaluation.json", "overoptimisation.json", "report.md", "comparisons_round1.jsonl",
                "comparisons_round2.jsonl", "comparisons_val.jsonl")   # shipped under data/run/, with the figures (*.png)
SEED_FILES = {"metrics.json": "seeds.json", "report.md": "seeds.md"}   # a run of several seeds: their aggregate
COMPARE_FILES = ("methods.json", "methods.png")   # `python -m minirlhf compare`'s: shipped when the run has them,
                                                  # otherwise the ones already in data/run are kept
SHIPPED = ("checkpoints", "run")   # the folders of data/ that ship replaces
OLD = ".ship-old"                  # where a swap keeps the old folders until the new ones are in place


def _check_whole(data: Path) -> None:
    if (data / OLD).exists():
        raise FileNotFoundError(f"an interrupted `python -m minirlhf ship` left {data} half replaced; run it again "
                                "(it first puts the old files back)")


def load_stage(name: str, device=None, tokenizer=None):
    """(model, tokenizer, metadata) of a shipped stage: pretrained, sft, rm, ppo or ppo_ptx."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the shipped stages are {list(STAGES)}")
    _check_whole(DATA)
    folder = CHECKPOINTS / name
    if not folder.exists():
        raise FileNotFoundError(f"{folder} is missing: run `python -m minirlhf pipeline --out runs/course` and "
                                "`python -m minirlhf ship runs/course` to make it")
    return load_checkpoint(folder, tokenizer=tokenizer, device=device)


def load_result(name: str):
    """A shipped result file of the course run (one of RESULT_FILES or a figure): JSON is parsed, text returned."""
    _check_whole(DATA)
    path = RUN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; available: {sorted(p.name for p in RUN.glob('*'))}")
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


# ------------------------------------------------------------------------------------------------------------
# Shipping a run


def ship_run(run: Path, data: Path = Path("data"), preset: str | None = "course") -> list[Path]:
    """Copy a finished run's checkpoints and results under data/ so the notebooks can start from any stage.

    A run of several seeds (`pipeline --seeds`): the first seed's, plus the seeds' metrics.json and report.md as
    data/run/seeds.json and seeds.md. preset: the preset the run must have been made with (None: any).
    Returns the paths written. Weights are stored as float16 (half the bytes; loading casts them back to float32),
    which keeps the whole data/ folder small enough to live in the repository.
    """
    run, data = Path(run), Path(data)
    if data.exists() and not data.is_dir():
        raise ValueError(f"--data {data} is a file; give the repository's data folder")
    first, seed_files = _run_to_ship(run)
    _check_finished(first, preset)
    data.mkdir(parents=True, exist_ok=True)
    _recover(data)
    staging = data / f".ship-new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        written = _write(first, seed_files, staging)
        _carry_over(data, staging)
        _swap(data, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [data / path.relative_to(staging) for path in written]


def _run_to_ship(run: Path) -> tuple[Path, dict]:
    """(the run folder to ship, {shipped name: the seeds' aggregate file}): a run of several seeds ships its first."""
    from minirlhf.runfolder import read_manifest

    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    manifest = read_manifest(run)
    seeds = sorted((p for p in run.glob("seed-*") if re.fullmatch(r"seed-\d+", p.name) and p.is_dir()),
                   key=lambda p: int(p.name[5:]))
    if manifest is None or manifest.get("kind") != "seeds":
        return run, {}
    if not manifest.get("finished") or not seeds:
        raise ValueError(f"{run} is not a finished run: the seeds' aggregate (metrics.json, report.md) is not "
                         f"written; finish it with `python -m minirlhf pipeline --seeds ... --resume --out {run}`")
    return seeds[0], {shipped: run / name for name, shipped in SEED_FILES.items()}


def _check_finished(run: Path, preset: str | None) -> None:
    """Refuse, before writing anything, a run that is not the pipeline's, of another preset, unfinished or damaged."""
    from minirlhf.pipeline import OUTPUTS
    from minirlhf.runfolder import read_manifest, stage_damage

    manifest = read_manifest(run)
    if manifest is None:
        raise ValueError(f"{run} is not a finished run: it has no run.json (it was not made by `python -m minirlhf "
                         f"pipeline`, or by a version before run folders: `python -m minirlhf pipeline --resume "
                         f"--out {run}` with its preset and seed records it)")
    if preset is not None and manifest.get("preset") != preset:
        raise ValueError(f"{run} is a run of preset {manifest.get('preset')!r}; ship publishes the run the notebooks "
                         f"and README describe, of preset {preset!r}")
    again = (f"`python -m minirlhf pipeline --resume --out {run} --preset {manifest.get('preset')} --seed "
             f"{manifest.get('seed')}`")
    missing = [stage for stage in OUTPUTS if stage not in manifest["stages"]]
    if missing or not manifest.get("finished"):
        what = f"missing {missing}" if missing else "its report is not written"
        raise ValueError(f"{run} is not a finished run: {what}; finish it with {again}")
    for entry in manifest["stages"].values():
        problem = stage_damage(run, entry)
        if problem is not None:
            raise ValueError(f"{run} is damaged: {problem}; {again} redoes the damaged stage")


def _write(run: Path, seed_files: dict, staging: Path) -> list[Path]:
    """The new data/checkpoints and data/run, complete, in `staging`; returns the files and checkpoints written."""
    written = []
    for name in STAGES:
        model, tokenizer, meta = load_checkpoint(run / name)
        meta = {k: v for k, v in meta.items() if k not in RESERVED_METADATA}   # save_checkpoint writes these anew
        meta["weights_dtype"] = "float16"
        written.append(save_checkpoint(staging / "checkpoints" / name, model.half(), tokenizer, stage=name,
                                       metadata=meta))
    (staging / "run").mkdir(parents=True)
    sources = {name: run / name for name in (*RESULT_FILES, *COMPARE_FILES, *(p.name for p in run.glob("*.png")))}
    for name, source in {**sources, **seed_files}.items():
        if source.is_file():
            shutil.copyfile(source, staging / "run" / name)
            with open(staging / "run" / name, "rb+") as f:
                os.fsync(f.fileno())   # on disk before the swap
            written.append(staging / "run" / name)
    return written


def _ships(folder: str, name: str) -> bool:
    """Whether ship writes data/<folder>/<name> (so an old one is an earlier ship's, not to be kept)."""
    if folder == "checkpoints":
        return name in STAGES
    if name in COMPARE_FILES:   # made by `compare`, not by the pipeline: an old one stays unless the run has one
        return False
    return name in RESULT_FILES or name in SEED_FILES.values() or name.endswith(".png")


def _carry_over(data: Path, staging: Path) -> None:
    """Copy what ship never writes from the old data/checkpoints and data/run into the new ones: the swap keeps it."""
    for folder in SHIPPED:
        old = data / folder
        for entry in sorted(old.iterdir()) if old.is_dir() else ():
            if _ships(folder, entry.name) or LEFTOVER.fullmatch(entry.name):   # (a temp file of an interrupted save)
                continue
            if (staging / folder / entry.name).exists():   # the run's own (e.g. its methods.json) replaces the old
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / folder / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, staging / folder / entry.name, follow_symlinks=False)


def _swap(data: Path, staging: Path) -> None:
    """Rename the staged folders into data/; the old ones wait in data/.ship-old and come back if anything fails."""
    old = data / OLD
    old.mkdir()
    try:
        for folder in SHIPPED:
            if (data / folder).exists():
                os.replace(data / folder, old / folder)
            os.replace(staging / folder, data / folder)
    except BaseException:   # Ctrl-C included
        _roll_back(data)
        raise
    shutil.rmtree(old)


def _roll_back(data: Path) -> None:
    """Put back the folders an interrupted swap moved aside (dropping any new one already in their place)."""
    old = data / OLD
    for folder in SHIPPED:
        if (old / folder).exists():
            if (data / folder).exists():
                shutil.rmtree(data / folder)
            os.replace(old / folder, data / folder)
    shutil.rmtree(old, ignore_errors=True)


def _recover(data: Path) -> None:
    """Before shipping: undo a swap that an earlier ship did not finish (killed), and drop its staging folders."""
    if (data / OLD).exists():
        print(f"an earlier ship was interrupted while swapping: putting back the old {data}/checkpoints and run")
        _roll_back(data)
    for leftover in data.glob(".ship-new-*"):
        shutil.rmtree(leftover, ignore_errors=True)
