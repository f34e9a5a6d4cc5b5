"""The lecture's claims over seeds: values read from metrics, mean and spread, met / not met (milliseconds)."""

import pytest

from minirlhf import report


def seed_metrics(icl8=0.9, ppo_win=0.75, val_loss=1.0):
    """The parts of one seed's metrics.json that the claims read."""
    policy = {"gold": 0.9, "win_rate_vs_sft": 0.5, "pretrain_val_loss": 1.2}
    chat = {"follow_up_with_history": 0.8, "follow_up_without_history": 0.15}
    return {
        "preset": "course", "seed": 0, "wall_seconds": {"sft": 10.0, "rm": 20.0}, "peak_rss_mb": {"rm": 500.0},
        "pretrained": {"icl": {"shots": [0, 1, 8], "accuracy": [0.1, 0.3, icl8]},
                       "icl_task": {"shots": [0, 1, 8], "accuracy": [0.35, 1.0, 1.0]},
                       "val_loss": val_loss, "entropy_floor": 1.0},
        "rm": {"val_accuracy": 0.76, "ceiling": 0.8, "probes": {"wrong_fact": 0.95, "rude": float("nan")}},
        "evaluation": {"policies": {"pretrained": {**policy, "win_rate_vs_sft": 0.1}, "sft": policy,
                                    "ppo": {**policy, "gold": 0.95, "win_rate_vs_sft": ppo_win, "pretrain_val_loss": 1.3},
                                    "ppo_ptx": {**policy, "win_rate_vs_sft": 0.7, "pretrain_val_loss": 1.25}},
                       "chat": {"by_policy": {"ppo": chat}}},
    }


def test_claim_values_read_each_figure():
    values = report.claim_values(seed_metrics())
    assert values["icl"] == pytest.approx(0.8) and values["icl_task"] == pytest.approx(0.65)
    assert values["sft_win"] == pytest.approx(0.9) and values["rm_over_ceiling"] == pytest.approx(0.95)
    assert values["rm_worst_probe"] == pytest.approx(0.95)                       # NaN probes are left out
    assert values["ptx_tax"] == pytest.approx(0.05) and values["ppo_gold_gain"] == pytest.approx(0.05)
    assert report.claim_values({})["icl"] is None                               # a missing stage: no value


def test_aggregate_mean_spread_and_met():
    per_seed = {0: seed_metrics(ppo_win=0.75), 1: seed_metrics(ppo_win=0.66), 2: seed_metrics(ppo_win=0.72)}
    agg = report.aggregate(per_seed)
    row = agg["claims"]["ppo_win"]
    assert row["values"] == {"0": 0.75, "1": 0.66, "2": 0.72}
    assert row["mean"] == pytest.approx(0.71) and (row["min"], row["max"]) == (0.66, 0.75)
    assert row["std"] == pytest.approx((((0.04) ** 2 + 0.05 ** 2 + 0.01 ** 2) / 3) ** 0.5)
    assert row["met"]                                  # mean 0.71 >= 0.70 and the worst seed misses by 0.04 only
    assert agg["wall_seconds"] == {"0": 30.0, "1": 30.0, "2": 30.0} and agg["peak_rss_mb"] == 500.0


def test_a_seed_far_off_or_a_low_mean_is_not_met():
    far = report.aggregate({0: seed_metrics(ppo_win=0.90), 1: seed_metrics(ppo_win=0.90),
                            2: seed_metrics(ppo_win=0.64)})["claims"]["ppo_win"]
    assert far["mean"] >= 0.70 and not far["met"]      # seed 2 misses 0.70 by 0.06 > TOLERANCE
    low = report.aggregate({0: seed_metrics(ppo_win=0.69), 1: seed_metrics(ppo_win=0.69)})["claims"]["ppo_win"]
    assert not low["met"]                              # every seed close, but the mean is below the target
    below = report.aggregate({0: seed_metrics(val_loss=1.12), 1: seed_metrics(val_loss=1.06)})["claims"]
    assert below["val_over_floor"]["met"]              # "<=" claims: mean 1.09 <= 1.10, no seed above 1.15
    missing = report.aggregate({0: seed_metrics(), 1: {}})["claims"]["icl"]
    assert missing["mean"] is None and not missing["met"]


def test_the_seeds_report_lists_every_claim(tmp_path):
    agg = report.aggregate({0: seed_metrics(), 1: seed_metrics(ppo_win=0.5)})
    text = report.write_seeds_report(tmp_path, agg).read_text()
    for claim in report.CLAIMS:
        assert claim.text in text
    assert "**not met**" in text and "[seed-1/report.md](seed-1/report.md)" in text


def test_the_wall_time_bullet_names_the_thread_count():
    import json

    metrics = json.loads((report.DATA / "run" / "metrics.json").read_text())
    for threads, said in ((1, "(1 torch thread)"), (2, "(2 torch threads)")):
        text = report.readme_results({**metrics, "threads": threads}, ptx_coef=1.0)
        assert f"**Wall time** of this run {said}:" in " ".join(text.split())
    text = report.readme_results({k: v for k, v in metrics.items() if k != "threads"}, ptx_coef=1.0)
    assert "**Wall time** of this run:" in " ".join(text.split())
