"""Nothing a user has is ever lost (issue 9): run folders, ship, --resume, numbers at the boundary, Ctrl-C, SIGKILL.

One test per reproduction of the issue, typed as a user would (most go through `main`). The run-folder and ship
tests replace the pipeline's stages by quick stand-ins that write what the real ones write (a checkpoint, a JSON
file); the last tests run a small real pipeline in subprocesses, kill it at 20+ points and resume it.
"""

import copy
import errno
import hashlib
import importlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from minirlhf import pipeline, report
from minirlhf.__main__ import main
from minirlhf.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from minirlhf.model import GPT, get_config

REPO = Path(__file__).resolve().parents[1]
TIMING = {"wall_seconds", "peak_rss_mb", "seconds", "tokens_per_s", "generate_seconds"}


def tree_digest(folder: Path) -> dict:
    """{relative path: sha256} of every file under folder: equal digests, nothing changed."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


COMPARISON = {"prompt": {"id": "p", "text": "hi"}, "responses": ["a", "b"], "ended": [True, True], "ranking": [0, 1],
              "gold": [1.0, 0.0], "sources": ["x", "y"], "labeler": {"temperature": 1.0, "seed": 0}}


class StagesRan(list):
    """The names of the stages that ran, in order; `fail`: {stage: the exception it raises instead}."""

    def __init__(self):
        super().__init__()
        self.fail = {}


@pytest.fixture()
def quick_stages(monkeypatch):
    """pipeline.STAGES replaced by stand-ins writing a tiny checkpoint or a JSON file each; returns the list of the
    stages that ran, in order. Stand-ins whose name is in `quick_stages.fail` raise that exception instead."""
    ran = StagesRan()
    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=64))

    def stand_in(name, output):
        def stage(run):
            ran.append(name)
            if name in ran.fail:
                raise ran.fail[name]
            if output.endswith(".jsonl"):
                write_text_atomic(run.path(name), json.dumps(COMPARISON) + "\n")
            elif output.endswith(".json"):
                write_text_atomic(run.path(name), json.dumps({"stage": name}) + "\n")
            else:
                save_checkpoint(run.path(name), model, stage=name)
            return {"value": len(name), "seed": run.seed_for(name)}
        return stage

    monkeypatch.setattr(pipeline, "STAGES", tuple((n, o, stand_in(n, o)) for n, o, _ in pipeline.STAGES))
    monkeypatch.setattr(report, "claim_values", lambda metrics: {})
    monkeypatch.setattr(report, "write_report",
                        lambda folder, metrics: write_text_atomic(Path(folder) / "report.md", "# a report\n"))
    return ran


def pipeline_cli(out, *flags, preset="smoke"):
    return main(["pipeline", "--preset", preset, "--out", str(out), *flags])


# ------------------------------------------------------------------------------------------------------------
# 1. --out never overwrites the user's files; one run at a time


def test_pipeline_refuses_a_folder_holding_someone_elses_files(tmp_path, quick_stages, capsys):
    out = tmp_path / "u"
    out.mkdir()
    (out / "report.md").write_text("mine\n")
    (out / "metrics.json").write_text('{"m": 1}\n')
    before = tree_digest(out)
    assert pipeline_cli(out) == 2
    err = capsys.readouterr().err
    assert f"{out} is not empty and is not a run folder" in err and "--force" in err and "Traceback" not in err
    assert quick_stages == [] and tree_digest(out) == before                 # nothing ran, nothing changed
    assert pipeline_cli(out, "--force") == 2                                  # --force never writes over them
    assert "['metrics.json', 'report.md']" in capsys.readouterr().err and tree_digest(out) == before


def test_force_runs_beside_foreign_files_and_leaves_them_alone(tmp_path, quick_stages):
    out = tmp_path / "u"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert pipeline_cli(out, "--force") == 0
    assert (out / "notes.txt").read_text() == "mine\n"
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["foreign"] == ["notes.txt"] and manifest["finished"] and len(quick_stages) == 11


def test_data_refuses_to_overwrite_someone_elses_corpus(tmp_path, monkeypatch, capsys):
    import minirlhf.world as world

    out = tmp_path / "u"
    out.mkdir()
    (out / "corpus.jsonl").write_text("my corpus\n")
    assert main(["data", "--out", str(out)]) == 2
    assert "holds no toy world" in capsys.readouterr().err
    assert (out / "corpus.jsonl").read_text() == "my corpus\n"
    written = []                                  # a world's own folder is rewritten (write_world_files stubbed)
    monkeypatch.setattr(world, "write_world_files", lambda w, folder: written.append(Path(folder)))
    ours = tmp_path / "world"
    ours.mkdir()
    (ours / "entities.json").write_text(json.dumps({"config": {}, "entities": []}))
    assert main(["data", "--out", str(ours)]) == 0 and written == [ours]


def test_a_second_pipeline_in_a_folder_in_use_is_refused(tmp_path, quick_stages, capsys):
    from minirlhf.runfolder import RunFolder

    with RunFolder.open(tmp_path / "run", kind="run", identity={"preset": "smoke", "seed": 0}, config={}):
        assert pipeline_cli(tmp_path / "run", "--resume") == 1               # the first one is still running
        assert f"in use by another run (pid {os.getpid()})" in capsys.readouterr().err
    assert quick_stages == []
    assert pipeline_cli(tmp_path / "run", "--resume", "--force") == 0        # (its config differed: --force)


def test_an_existing_run_is_not_started_over_by_accident(tmp_path, quick_stages, capsys):
    assert pipeline_cli(tmp_path / "run") == 0
    before = tree_digest(tmp_path / "run")
    assert pipeline_cli(tmp_path / "run") == 2
    assert "already holds a run" in capsys.readouterr().err and tree_digest(tmp_path / "run") == before
    assert pipeline_cli(tmp_path / "run", "--force") == 0 and len(quick_stages) == 22   # --force: from the start


# ------------------------------------------------------------------------------------------------------------
# 2. --resume never relabels a run, and repairs what it can


def test_resume_refuses_another_preset_or_seed(tmp_path, quick_stages, capsys):
    run = tmp_path / "run"
    assert pipeline_cli(run) == 0
    before = tree_digest(run)
    assert pipeline_cli(run, "--resume", preset="course") == 2
    assert "holds a run of preset 'smoke'" in capsys.readouterr().err
    assert pipeline_cli(run, "--resume", "--seed", "7") == 2
    assert "seed 0" in capsys.readouterr().err
    assert pipeline_cli(run, "--resume", "--force", preset="course") == 2      # not even with --force
    assert tree_digest(run) == before and json.loads((run / "metrics.json").read_text())["preset"] == "smoke"


def test_resume_redoes_a_damaged_stage_and_every_stage_after_it(tmp_path, quick_stages, capsys):
    run = tmp_path / "run"
    assert pipeline_cli(run) == 0
    weights = run / "sft" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(3000)                                                      # truncate -s 3000
    capsys.readouterr()
    quick_stages.clear()
    assert pipeline_cli(run, "--resume") == 0
    out = capsys.readouterr().out
    assert f"{weights} is not the file this stage wrote" in out and "redoing sft and every stage after it" in out
    assert quick_stages == [name for name, _, _ in pipeline.STAGES][1:]      # sft and everything after it
    load_checkpoint(run / "sft")
    (run / "evaluation.json").unlink()                                        # a missing file: the same
    quick_stages.clear()
    assert pipeline_cli(run, "--resume") == 0 and quick_stages == ["evaluation", "overoptimisation"]
    assert f"{run / 'evaluation.json'} is missing" in capsys.readouterr().out


def test_a_resumed_run_reports_the_threads_its_stages_ran_with(tmp_path, quick_stages):
    run, n = tmp_path / "run", torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pipeline_cli(run) == 0
        torch.set_num_threads(2)                                              # resumed elsewhere: nothing redone
        assert pipeline_cli(run, "--resume") == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["threads"] == 1 and set(metrics["stage_threads"].values()) == {1}
        (run / "evaluation.json").unlink()                                    # two stages redone at 2 threads
        assert pipeline_cli(run, "--resume") == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["threads"] == "1–2"
        assert metrics["stage_threads"]["evaluation"] == metrics["stage_threads"]["overoptimisation"] == 2
    finally:
        torch.set_num_threads(n)


def test_a_truncated_metrics_json_is_rebuilt_or_named(tmp_path, quick_stages, capsys):
    run = tmp_path / "run"
    assert pipeline_cli(run) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    with open(run / "metrics.json", "r+b") as f:
        f.truncate(20)
    quick_stages.clear()
    assert pipeline_cli(run, "--resume") == 0 and quick_stages == []          # run.json knows every stage
    assert json.loads((run / "metrics.json").read_text()) == metrics
    (run / "run.json").unlink()                                               # a run from before run.json ...
    with open(run / "metrics.json", "r+b") as f:
        f.truncate(20)                                                        # ... whose metrics.json is damaged
    assert pipeline_cli(run, "--resume") == 2
    assert f"{run / 'metrics.json'} cannot be read" in capsys.readouterr().err


def test_a_run_made_before_run_json_is_adopted_by_resume(tmp_path, quick_stages, capsys):
    run = tmp_path / "run"
    assert pipeline_cli(run) == 0
    (run / "run.json").unlink()
    (run / "rm" / "model.safetensors").write_bytes(b"not weights")           # this one does not load
    quick_stages.clear()
    assert pipeline_cli(run) == 2                                             # without --resume: refused, with a hint
    assert "--resume with its own preset and seed continues it" in capsys.readouterr().err
    assert pipeline_cli(run, "--resume") == 0
    assert quick_stages == ["rm", "ppo", "ppo_ptx", "evaluation", "overoptimisation"]
    assert json.loads((run / "run.json").read_text())["finished"]


# ------------------------------------------------------------------------------------------------------------
# 3. ship: all or nothing, only a finished course run


@pytest.fixture()
def shipped_data(tmp_path, quick_stages):
    """data/ with a first course run shipped, a world folder and a note of the user's; returns (data, run)."""
    data = tmp_path / "data"
    (data / "world").mkdir(parents=True)
    (data / "world" / "corpus.jsonl").write_text("the world\n")
    run = tmp_path / "course"
    assert pipeline_cli(run, preset="course") == 0
    assert main(["ship", str(run), "--data", str(data)]) == 0
    (data / "run" / "notes.md").write_text("my notes\n")
    return data, run


def test_ship_refuses_a_run_without_metrics_or_report(tmp_path, shipped_data, capsys):
    data, run = shipped_data
    before = tree_digest(data)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    for name in ("metrics.json", "report.md", "run.json"):
        (bare / name).unlink()
    assert main(["ship", str(bare), "--data", str(data)]) == 2
    assert "is not a finished run: it has no run.json" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    manifest = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**manifest, "finished": False}))   # killed while reporting
    assert main(["ship", str(unfinished), "--data", str(data)]) == 2
    assert "its report is not written" in capsys.readouterr().err and tree_digest(data) == before


def test_ship_refuses_a_run_of_another_preset_or_a_damaged_one(tmp_path, shipped_data, capsys):
    data, run = shipped_data
    before = tree_digest(data)
    assert pipeline_cli(tmp_path / "smoke") == 0
    assert main(["ship", str(tmp_path / "smoke"), "--data", str(data)]) == 2
    assert "is a run of preset 'smoke'" in capsys.readouterr().err
    with open(run / "ppo" / "model.safetensors", "r+b") as f:
        f.truncate(3000)
    assert main(["ship", str(run), "--data", str(data)]) == 2
    assert "ppo/model.safetensors is not the file this stage wrote" in capsys.readouterr().err
    assert tree_digest(data) == before


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_ship_that_fails_part_way_leaves_data_as_it_was(tmp_path, shipped_data, monkeypatch, capsys, failure):
    import minirlhf.course.shipped as shipped

    data, _ = shipped_data
    before = tree_digest(data)
    run = tmp_path / "course2"
    assert pipeline_cli(run, "--seed", "1", preset="course") == 0
    saves = []

    def failing_save(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:
            raise failure
        return save_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr(shipped, "save_checkpoint", failing_save)
    assert main(["ship", str(run), "--data", str(data)]) == (130 if isinstance(failure, KeyboardInterrupt) else 1)
    err = capsys.readouterr().err
    assert "--resume" not in err and tree_digest(data) == before and sorted(os.listdir(data)) == ["checkpoints",
                                                                                                  "run", "world"]
    monkeypatch.undo()
    swaps = []                                       # and a swap that fails half-way is rolled back too
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).parent in (data, data / ".ship-old"):
            swaps.append(dst)
            if len(swaps) == 3:                      # data/checkpoints swapped in, data/run not yet moved
                raise OSError(errno.EIO, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(shipped.os, "replace", failing_replace)
    assert main(["ship", str(run), "--data", str(data)]) == 1
    monkeypatch.undo()
    assert tree_digest(data) == before and not list(data.glob(".ship*"))


def test_ship_swaps_in_the_new_run_and_keeps_what_it_does_not_own(tmp_path, shipped_data):
    data, _ = shipped_data
    (data / "checkpoints" / "dpo").mkdir()
    (data / "checkpoints" / "dpo" / "weights.bin").write_bytes(b"someone's")
    (data / "run" / "methods.json").write_text('{"methods": {}}')   # `compare`'s, made after the first ship
    run = tmp_path / "course2"
    assert pipeline_cli(run, "--seed", "1", preset="course") == 0
    assert main(["ship", str(run), "--data", str(data)]) == 0
    assert json.loads((data / "run" / "metrics.json").read_text())["seed"] == 1
    assert load_checkpoint(data / "checkpoints" / "ppo")[2]["weights_dtype"] == "float16"
    assert (data / "run" / "notes.md").read_text() == "my notes\n"
    assert (data / "run" / "methods.json").read_text() == '{"methods": {}}'   # the new run has none: kept
    assert (data / "checkpoints" / "dpo" / "weights.bin").read_bytes() == b"someone's"
    (run / "methods.json").write_text('{"methods": {"dpo": []}}')   # a run with its own comparison ships it
    assert main(["ship", str(run), "--data", str(data)]) == 0
    assert (data / "run" / "methods.json").read_text() == '{"methods": {"dpo": []}}'
    assert (data / "world" / "corpus.jsonl").read_text() == "the world\n"
    assert not list(data.glob(".ship*"))


def test_ship_of_a_file_or_a_missing_run_is_a_message(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert main(["ship", str(tmp_path), "--data", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["ship", str(tmp_path / "nope"), "--data", str(tmp_path / "data")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# 4. The frozen models stay frozen


def test_train_ppo_refuses_a_policy_sharing_the_references_parameters():
    from minirlhf.ppo import PPOConfig, train_ppo
    from minirlhf.reward import RewardModel

    torch.manual_seed(0)
    sft = GPT(get_config("tiny", vocab_size=64))
    rm = RewardModel.from_gpt(sft)
    cfg = PPOConfig(iterations=1, batch_size=4, minibatches=1, max_new_tokens=4)
    with pytest.raises(ValueError, match="policy and reference share parameters"):
        train_ppo(copy.copy(sft), [[1, 2, 3]], cfg, reference=sft, reward_model=rm,
                  value_model=copy.deepcopy(rm), tokenizer=None)


# ------------------------------------------------------------------------------------------------------------
# 5. Every number checked at the boundary, with its range


@pytest.mark.parametrize("argv, flag", [
    (["pretrain", "--steps", "0"], "--steps"),
    (["pretrain", "--steps", "-5"], "--steps"),
    (["pretrain", "--max-seconds", "-1"], "--max-seconds"),
    (["pretrain", "--max-seconds", "nan"], "--max-seconds"),
    (["sample", "ckpt", "--n", "0"], "--n"),
    (["sample", "ckpt", "--temperature", "nan"], "--temperature"),
    (["sample", "ckpt", "--temperature", "-1"], "--temperature"),
    (["sample", "ckpt", "--top-k", "0"], "--top-k"),
    (["sample", "ckpt", "--prompt", "caf\udce9 ?"], "--prompt"),             # invalid UTF-8 from the terminal
    (["pipeline", "--seed", str(2**70)], "--seed"),
    (["data", "--seed", "-1"], "--seed"),
])
def test_bad_numbers_on_the_command_line_are_refused_with_their_range(argv, flag, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the command ran")

    monkeypatch.setattr(pipeline, "pretrain_model", never)
    monkeypatch.setattr(pipeline, "run_pipeline", never)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and re.search(r"(≥|>|from \d+ to|UTF-8)", err) and "Traceback" not in err


@pytest.mark.parametrize("config, field, value", [
    ("ppo.PPOConfig", "iterations", 0), ("ppo.PPOConfig", "lr", -1e-5), ("ppo.PPOConfig", "clip_range", -0.2),
    ("ppo.PPOConfig", "temperature", math.nan), ("ppo.PPOConfig", "minibatches", 0), ("ppo.PPOConfig", "gamma", 1.5),
    ("pretrain.PretrainConfig", "steps", 0), ("pretrain.PretrainConfig", "max_seconds", -1.0),
    ("pretrain.PretrainConfig", "lr", math.inf), ("sft.SFTConfig", "lr", math.nan), ("sft.SFTConfig", "batch_size", 0),
    ("reward.RewardConfig", "lr", math.nan), ("reward.RewardConfig", "epochs", 0),
    ("reward.RewardConfig", "lr", "3e-4"), ("pretrain.PretrainConfig", "lr", True),   # not numbers at all
])
def test_bad_numbers_in_a_config_are_refused_with_their_range(config, field, value):
    module, name = config.split(".")
    cls = getattr(importlib.import_module(f"minirlhf.{module}"), name)
    with pytest.raises(ValueError, match=rf"{name}.{field}=.*: give (an integer|a finite number|a number)"):
        cls(**{field: value})


def test_nan_rewards_stop_the_pairwise_loss():
    from minirlhf.reward import pairwise_loss

    rankings = torch.tensor([[0, 1, 2], [1, 0, -1]])
    pairwise_loss(torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.2, math.nan]]), rankings)   # a NaN in padding: ignored
    with pytest.raises(FloatingPointError, match=r"rewards of prompt 0 of the batch are not finite"):
        pairwise_loss(torch.tensor([[math.nan, 0.0, -1.0], [0.5, 0.2, 0.0]]), rankings)


def test_a_nan_gold_score_in_a_comparison_file_is_refused(tmp_path):
    from minirlhf.comparisons import load_comparisons

    record = {"prompt": {"id": "p", "text": "hi"}, "responses": ["a", "b"], "ended": [True, True],
              "ranking": [0, 1], "gold": [0.5, float("nan")], "sources": ["x", "y"], "labeler": {}}
    (tmp_path / "c.jsonl").write_text(json.dumps(record) + "\n")              # json writes NaN
    with pytest.raises(ValueError, match=r"c.jsonl line 1: 'gold' must be a list of numbers, finite"):
        load_comparisons(tmp_path / "c.jsonl")


# ------------------------------------------------------------------------------------------------------------
# 6. Cheap checks before expensive work; 7. messages, not tracebacks


def test_pretrain_into_a_file_fails_before_training(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("trained first")

    monkeypatch.setattr(pipeline, "pretrain_model", never)
    (tmp_path / "a-file").write_text("x")
    assert main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_pipeline_into_a_file_fails_before_any_stage(tmp_path, quick_stages, capsys):
    (tmp_path / "a-file").write_text("x")
    assert pipeline_cli(tmp_path / "a-file") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert pipeline_cli(tmp_path / "a-file" / "run") == 1                    # a file in the way: one line
    assert "Not a directory" in capsys.readouterr().err and quick_stages == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions (root ignores them)")
def test_pipeline_into_a_read_only_folder_fails_before_any_stage(tmp_path, quick_stages, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert pipeline_cli(out) == 1
    finally:
        out.chmod(0o700)
    assert "Permission denied" in capsys.readouterr().err and quick_stages == []


def test_a_full_disk_is_a_one_line_message_and_the_run_resumes(tmp_path, quick_stages, capsys):
    quick_stages.fail["rm"] = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "rm"))
    assert pipeline_cli(tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'run' / 'rm'}: No space left on device"
    del quick_stages.fail["rm"]
    quick_stages.clear()
    assert pipeline_cli(tmp_path / "run", "--resume") == 0 and quick_stages[0] == "rm"


@pytest.fixture()
def reward_model_checkpoint(tmp_path, tiny_tokenizer):
    from minirlhf.reward import RewardModel

    torch.manual_seed(0)
    rm = RewardModel(get_config("tiny", vocab_size=len(tiny_tokenizer)))
    return save_checkpoint(tmp_path / "rm", rm, tiny_tokenizer, stage="rm")


def test_sampling_from_a_reward_model_says_it_is_not_a_policy(reward_model_checkpoint, capsys):
    assert main(["sample", str(reward_model_checkpoint)]) == 2
    assert "a reward model scores answers, it does not write them" in capsys.readouterr().err


def test_a_reward_model_given_as_pretrained_is_refused_before_anything_runs(reward_model_checkpoint, tmp_path,
                                                                           quick_stages, capsys):
    assert pipeline_cli(tmp_path / "run", "--pretrained", str(reward_model_checkpoint)) == 2
    assert "holds a RewardModel (stage 'rm'), not a GPT" in capsys.readouterr().err
    assert quick_stages == [] and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------
# 8. A first Ctrl-C always stops


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_command(tmp_path, monkeypatch, capsys):
    import minirlhf.__main__ as cli

    finished = []

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)   # the Ctrl-C arrives while Python runs a __del__ (it was: regex's)

    def command(args):
        Finalized()                              # made and dropped at once: its __del__ runs here
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:       # the rest of a long command
            time.sleep(0.01)
        finished.append(True)

    monkeypatch.setattr(cli, "_cmd_data", command)
    # a shell starts background jobs with SIGINT ignored, and the CLI rightly leaves an ignored SIGINT alone
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handler = signal.getsignal(signal.SIGINT)
        start = time.monotonic()
        assert cli.main(["data", "--out", str(tmp_path)]) == 130
        assert not finished and time.monotonic() - start < 3
        assert "interrupted:" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) is handler   # put back
    finally:
        signal.signal(signal.SIGINT, outside)


# ------------------------------------------------------------------------------------------------------------
# Fault injection: a small real pipeline, killed (SIGKILL) at 20+ points, then resumed

SCRIPT = textwrap.dedent('''
    import sys
    from dataclasses import replace

    from minirlhf import pipeline
    from minirlhf.comparisons import ComparisonConfig
    from minirlhf.ppo import PPOConfig
    from minirlhf.pretrain import PretrainConfig
    from minirlhf.reward import RewardConfig
    from minirlhf.sft import SFTConfig
    from minirlhf.world import WorldConfig

    cfg = replace(pipeline.smoke_config(), name="mini",   # every stage runs, on a small world, in seconds
                  pretrain=PretrainConfig(steps=12, tokens_per_step=512, curriculum=((0, 32), (4, 64), (8, 128)),
                                          lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=6, eval_batches=1,
                                          probe_every=6),
                  val_documents=40, icl_episodes=2, sft=SFTConfig(epochs=1, lr=1e-3, batch_size=32),
                  comparisons=ComparisonConfig(k=4, round1_passes=1, round2_passes=1),
                  reward=RewardConfig(epochs=1, lr=3e-4, batch_prompts=32),
                  ppo=PPOConfig(iterations=1, batch_size=8, minibatches=1, ppo_epochs=1, max_new_tokens=8),
                  round1_ppo_iterations=1,
                  overoptimisation=pipeline.OveroptimisationConfig(prompts=4, samples=2, rl_iterations=2))
    world = WorldConfig(n_documents=1500, n_prompts={"train": 48, "val": 16, "test": 16})
    pipeline.run_pipeline(sys.argv[1], cfg, resume=sys.argv[2] == "resume", progress=False, world=world)
''')
STAGE_NAMES = [name for name, _, _ in pipeline.STAGES]
STARTED = re.compile(r"\[(\w+)\] running")


def start_mini(tmp_path: Path, folder: Path, mode: str = "resume") -> subprocess.Popen:
    script = tmp_path / "mini_pipeline.py"
    if not script.exists():
        script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIRLHF_DEVICE": "cpu", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script), str(folder), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


class Lines:
    """A subprocess's output lines, read by a thread: wait for the first line matching a test."""

    def __init__(self, process: subprocess.Popen):
        self.lines, self.new = [], threading.Condition()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process):
        for line in process.stdout:
            with self.new:
                self.lines.append(line.rstrip("\n"))
                self.new.notify_all()
        with self.new:
            self.lines.append(None)   # the end
            self.new.notify_all()

    def wait_for(self, test, timeout: float = 120) -> str | None:
        """The first line (from the start) for which test(line) holds; None if the output ended first."""
        deadline, seen = time.monotonic() + timeout, 0
        with self.new:
            while True:
                for line in self.lines[seen:]:
                    if line is None or test(line):
                        return line
                seen = len(self.lines)
                assert self.new.wait(max(0.0, deadline - time.monotonic())), "the run printed nothing for 2 minutes"

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line is not None)


def comparable(folder: Path) -> dict:
    """What an interrupted-and-resumed run must repeat exactly: metrics.json without wall times, and the bytes of
    every checkpoint's weights and every result file."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING}
        return [strip(v) for v in value] if isinstance(value, list) else value

    metrics = json.dumps(strip(json.loads((folder / "metrics.json").read_text())), sort_keys=True)
    files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.name == "model.safetensors" or p.suffix in (".json", ".jsonl")
             and p.name not in ("metrics.json", "run.json") and p.parent == folder}
    return {"metrics": metrics, "files": files}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The small pipeline, uninterrupted: its folder and its stages' wall times."""
    tmp = tmp_path_factory.mktemp("reference")
    process = start_mini(tmp, tmp / "run", "fresh")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return tmp / "run", json.loads((tmp / "run" / "metrics.json").read_text())["wall_seconds"]


def test_killing_the_pipeline_anywhere_then_resuming_repeats_the_uninterrupted_run(tmp_path, reference_run):
    reference, wall = reference_run
    rng = random.Random(9)
    plan = [(None, rng.uniform(0.2, 3.0)) for _ in range(2)]        # while starting: imports, lock, run.json
    for name in STAGE_NAMES:                                         # at the start of a stage, and inside it
        plan += [(name, 0.0), (name, rng.uniform(0.0, 1.2 * wall[name]))]
    plan += [(STAGE_NAMES[-1], wall[STAGE_NAMES[-1]] + rng.uniform(0.1, 1.5))]   # while writing the report
    folder, landed = tmp_path / "run", []
    for target, delay in plan:
        process = start_mini(tmp_path, folder)
        lines = Lines(process)
        if target is not None:                # this stage's start, or a later one's if it had finished already
            line = lines.wait_for(lambda s: (m := STARTED.match(s)) and STAGE_NAMES.index(m[1]) >=
                                  STAGE_NAMES.index(target))
            if line is None:                  # the run finished before reaching the kill point
                break
        time.sleep(delay)
        process.kill()                        # SIGKILL: no handler, no clean-up
        process.wait()
        last = [m[1] for m in map(STARTED.match, lines.text().splitlines()) if m]
        landed.append(last[-1] if last else "start")
    process = start_mini(tmp_path, folder)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert len(landed) >= 20 and set(STAGE_NAMES) <= set(landed), landed
    assert comparable(folder) == comparable(reference)
    assert json.loads((folder / "run.json").read_text())["finished"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "leftovers of interrupted writes"


def test_resume_repairs_a_truncated_checkpoint_of_a_real_run(tmp_path, reference_run):
    reference, _ = reference_run
    folder = tmp_path / "run"
    shutil.copytree(reference, folder)
    with open(folder / "sft" / "model.safetensors", "r+b") as f:
        f.truncate(3000)
    process = start_mini(tmp_path, folder)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "sft/model.safetensors is not the file this stage wrote" in output
    assert comparable(folder) == comparable(reference)


def test_a_second_pipeline_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    first = start_mini(tmp_path, tmp_path / "run", "fresh")
    try:
        assert Lines(first).wait_for(lambda s: s.startswith("[pretrained] running")) is not None
        second = start_mini(tmp_path, tmp_path / "run", "resume")
        output, _ = second.communicate(timeout=120)
        assert second.returncode != 0 and "is in use by another run" in output
    finally:
        first.kill()
        first.wait()
