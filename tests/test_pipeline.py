"""The whole road on the `tiny` preset: every stage runs, writes its checkpoint atomically, and resumes."""

import json

import pytest

from minirlhf import pipeline
from minirlhf.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny_run")
    metrics = pipeline.run_pipeline(run, preset="tiny", seed=0, progress=False)
    return run, metrics


def test_tiny_pipeline_writes_every_stage_and_a_report(tiny_run):
    run, metrics = tiny_run
    for stage in ("pretrained", "sft", "rm", "ppo", "ppo_ptx"):
        load_checkpoint(run / stage)                                   # each loads (config, weights, tokenizer)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics, default=float))
    for key in ("pretrained", "sft", "rm", "ppo", "ppo_ptx", "evaluation", "beta_sweep", "wall_seconds", "summary"):
        assert key in metrics, key
    assert set(metrics["summary"]) == {"pretrained", "sft", "ppo", "ppo_ptx"}
    assert metrics["summary"]["sft"]["win_rate_vs_sft"] == 0.5 and metrics["summary"]["sft"]["kl_to_sft"] == 0
    assert 0.5 <= metrics["rm"]["ceiling"] <= 1
    report = (run / "report.md").read_text()
    assert "## Step 2 — reward model" in report and "win rate vs SFT" in report
    assert (run / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.glob(".*tmp*")), "temporary files were left behind"


def test_resume_skips_finished_stages(tiny_run, capsys):
    run, metrics = tiny_run
    again = pipeline.run_pipeline(run, preset="tiny", seed=0, resume=True, progress=False)
    out = capsys.readouterr().out
    assert out.count("skipped (--resume)") == 8
    assert again["summary"] == metrics["summary"]


def test_an_interrupted_stage_leaves_no_half_written_checkpoint(tiny_run, tmp_path, monkeypatch):
    import shutil

    run, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for later in ("ppo", "ppo_ptx"):
        shutil.rmtree(copy / later)
    (copy / "evaluation.json").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_ppo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(copy, preset="tiny", seed=0, resume=True, progress=False)
    assert not (copy / "ppo").exists() and not list(copy.glob(".ppo*"))
    for stage in ("pretrained", "sft", "rm"):
        load_checkpoint(copy / stage)                                   # finished stages are intact
    json.loads((copy / "metrics.json").read_text())                     # and so is the metrics file


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        pipeline.pipeline_config("large")
