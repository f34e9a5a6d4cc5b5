"""The whole road on the `smoke` preset: every stage runs, writes its output atomically, resumes, and repeats exactly."""

import json
import shutil

import pytest

from minirlhf import pipeline
from minirlhf.checkpoint import load_checkpoint, read_metadata
from minirlhf.comparisons import load_comparisons
from minirlhf.report import CLAIMS

TIMING = {"wall_seconds", "peak_rss_mb", "seconds", "tokens_per_s", "generate_seconds"}


def without_timing(metrics):
    """metrics.json without wall times, memory and speeds: what the same seed must repeat exactly."""
    if isinstance(metrics, dict):
        return {k: without_timing(v) for k, v in metrics.items() if k not in TIMING}
    if isinstance(metrics, list):
        return [without_timing(v) for v in metrics]
    return metrics


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke_run")
    metrics = pipeline.run_pipeline(run, preset="smoke", seed=0, progress=False)
    return run, metrics


def test_smoke_pipeline_writes_every_stage_and_a_report(smoke_run):
    run, metrics = smoke_run
    for name, output, _ in pipeline.STAGES:
        assert pipeline._done(run / output), name
        assert name in metrics and name in metrics["wall_seconds"], name
    for stage in ("pretrained", "sft", "rm_round1", "ppo_round1", "rm", "ppo", "ppo_ptx"):
        load_checkpoint(run / stage)                                   # each loads (config, weights, tokenizer)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics, default=float))
    assert set(metrics["evaluation"]["policies"]) == {"pretrained", "sft", "ppo", "ppo_ptx"}
    sft = metrics["evaluation"]["policies"]["sft"]
    assert sft["win_rate_vs_sft"] == 0.5 and sft["kl_to_sft"] == 0
    assert 0.5 <= metrics["rm"]["ceiling"] <= 1
    assert set(metrics["claims"]) == {c.key for c in CLAIMS}
    report = (run / "report.md").read_text()
    assert "## Step 2 — reward models" in report and "win rate vs SFT" in report and "Over-optimisation" in report
    assert (run / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.glob(".*tmp*")), "temporary files were left behind"


def test_two_rounds_make_rm_round1_and_the_main_rm(smoke_run):
    run, metrics = smoke_run
    round1 = load_comparisons(run / "comparisons_round1.jsonl")
    round2 = load_comparisons(run / "comparisons_round2.jsonl")
    assert {s.split("@")[0] for c in round1 for s in c.sources} == {"pretrained", "sft"}
    assert {s.split("@")[0] for c in round2 for s in c.sources} == {"sft", "ppo_round1", "pretrained"}
    assert read_metadata(run / "rm_round1")["metrics"]["train_comparisons"] == len(round1)
    assert read_metadata(run / "rm")["metrics"]["train_comparisons"] == len(round1) + len(round2)
    assert metrics["ppo_round1"]["reward_model"] == "rm_round1" and metrics["ppo"]["reward_model"] == "rm"
    assert 0 <= metrics["comparisons_round1"]["fact_contrast"] <= 1


def test_overoptimisation_is_saved_with_both_reward_models(smoke_run):
    run, metrics = smoke_run
    over = json.loads((run / "overoptimisation.json").read_text())
    cfg = pipeline.pipeline_config("smoke").overoptimisation
    assert set(over["best_of_n"]) == {"rm_round1", "rm"}
    assert [c["n"] for c in over["best_of_n"]["rm"]] == [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cfg.samples]
    assert over["best_of_n"]["rm"][0]["gold"] == over["best_of_n"]["rm_round1"][0]["gold"] == over["sft_gold"]
    assert len(over["rl"]["rm_round1"]["gold"]) == cfg.rl_iterations      # one point per iteration
    assert set(over["fits"]["best_of_n"]) == {"rm_round1", "rm"} and set(over["fits"]["rl"]) == {"rm_round1"}
    assert [p["beta"] for p in over["points"]] == [pipeline.pipeline_config("smoke").ppo.init_kl_coef, 0.0]
    assert metrics["overoptimisation"]["fits"] == over["fits"]


def test_resume_skips_finished_stages(smoke_run, capsys):
    run, metrics = smoke_run
    again = pipeline.run_pipeline(run, preset="smoke", seed=0, resume=True, progress=False)
    assert capsys.readouterr().out.count("skipped (--resume)") == len(pipeline.STAGES)
    assert again["evaluation"] == metrics["evaluation"]


def test_an_interrupted_stage_leaves_no_half_written_checkpoint_and_resuming_repeats_it(smoke_run, tmp_path,
                                                                                          monkeypatch):
    run, metrics = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for later in ("ppo", "ppo_ptx"):
        shutil.rmtree(copy / later)
    (copy / "evaluation.json").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "train_ppo", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_pipeline(copy, preset="smoke", seed=0, resume=True, progress=False)
    assert not (copy / "ppo").exists() and not list(copy.glob(".ppo*"))
    for stage in ("pretrained", "sft", "rm"):
        load_checkpoint(copy / stage)                                   # finished stages are intact
    json.loads((copy / "metrics.json").read_text())                     # and so is the metrics file
    resumed = pipeline.run_pipeline(copy, preset="smoke", seed=0, resume=True, progress=False)
    assert without_timing(resumed) == without_timing(metrics)          # each stage has its own seed


def test_the_same_seed_repeats_every_number(smoke_run, tmp_path):
    _, metrics = smoke_run
    again = pipeline.run_pipeline(tmp_path / "again", preset="smoke", seed=0, progress=False)
    assert without_timing(json.loads((tmp_path / "again" / "metrics.json").read_text())) == \
        without_timing(json.loads(json.dumps(metrics, default=float)))
    assert again["claims"] == metrics["claims"]


def test_presets_are_pipelines_not_model_sizes():
    with pytest.raises(ValueError, match="unknown pipeline preset 'tiny'"):
        pipeline.pipeline_config("tiny")
    smoke = pipeline.pipeline_config("smoke")
    assert smoke.model.n_embd == 32 and smoke.model.block_size == 128   # the tiny model, with room for chat prompts
    assert smoke.max_new_tokens == smoke.ppo.max_new_tokens
    with pytest.raises(ValueError, match="ptx_coef"):
        pipeline.PipelineConfig(ppo=pipeline.PPOConfig(ptx_coef=1.0))


def test_each_stage_has_its_own_seed(tmp_path):
    run = pipeline.Run(tmp_path, pipeline.pipeline_config("smoke"), seed=2)
    seeds = [run.seed_for(name) for name, _, _ in pipeline.STAGES]
    assert len(set(seeds)) == len(seeds) and seeds[0] == 2000


def test_seeds_aggregate_and_ship_the_first_seed(smoke_run, tmp_path, capsys):
    from minirlhf.course.shipped import ship_run

    run, metrics = smoke_run
    shutil.copytree(run, tmp_path / "runs" / "seed-0")                   # seed 0 finished: --resume reuses it
    agg = pipeline.run_seeds(tmp_path / "runs", preset="smoke", seeds=(0,), resume=True, progress=False)
    assert capsys.readouterr().out.count("skipped (--resume)") == len(pipeline.STAGES)
    assert agg["seeds"] == [0] and agg["claims"]["ppo_win"]["values"] == {"0": metrics["claims"]["ppo_win"]}
    assert json.loads((tmp_path / "runs" / "metrics.json").read_text()) == json.loads(json.dumps(agg))
    assert "seed-0/report.md" in (tmp_path / "runs" / "report.md").read_text()
    written = ship_run(tmp_path / "runs", tmp_path / "data", preset="smoke")
    assert (tmp_path / "data" / "run" / "seeds.json").exists() and (tmp_path / "data" / "run" / "seeds.md").exists()
    assert json.loads((tmp_path / "data" / "run" / "metrics.json").read_text())["seed"] == 0   # seed 0's own
    assert tmp_path / "data" / "checkpoints" / "ppo" in written
