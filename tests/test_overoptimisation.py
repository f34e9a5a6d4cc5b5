"""Best-of-n by subsampling, and Gao et al.'s functional forms (milliseconds)."""

import itertools
import math

import numpy as np
import pytest

from minirlhf.overoptimisation import (
    best_of_n_curve,
    best_of_n_weights,
    fit_best_of_n,
    fit_rl,
    gao_best_of_n,
    gao_rl,
)


def direct_best_of_n(rewards, gold, n):
    """The mean over prompts and over every n-subset of the samples of the gold of the subset's RM favourite."""
    rewards, gold = np.asarray(rewards), np.asarray(gold)
    per_prompt = []
    for b in range(rewards.shape[1]):
        subsets = list(itertools.combinations(range(rewards.shape[0]), n))
        per_prompt.append(np.mean([gold[max(s, key=lambda j: rewards[j, b]), b] for s in subsets]))
    return float(np.mean(per_prompt))


def test_best_of_n_on_a_hand_case():
    rewards, gold = [[1.0], [3.0], [2.0]], [[0.1], [0.9], [0.5]]   # 3 samples for one prompt
    curve = best_of_n_curve(rewards, gold, [1, 2, 3])
    assert [c["gold"] for c in curve] == pytest.approx([0.5, (0.9 + 0.5 + 0.9) / 3, 0.9])   # n = 2: 3 subsets
    assert [c["rm_reward"] for c in curve] == pytest.approx([2.0, (3 + 2 + 3) / 3, 3.0])
    assert curve[1]["kl"] == pytest.approx(math.log(2) - 1 / 2)
    assert curve[0]["win_rate_vs_sft"] == pytest.approx(0.5)                # SFT against itself: a tie on average
    assert curve[2]["win_rate_vs_sft"] == pytest.approx((1 + 1 + 0.5) / 3)  # 0.9 beats 0.1 and 0.5, ties 0.9


def test_subsampling_equals_the_direct_max_over_every_subset():
    rng = np.random.default_rng(0)
    rewards, gold = rng.normal(size=(7, 5)), rng.uniform(size=(7, 5))   # 7 samples for each of 5 prompts
    for c in best_of_n_curve(rewards, gold, range(1, 8)):
        assert c["gold"] == pytest.approx(direct_best_of_n(rewards, gold, c["n"]))


def test_weights_are_a_distribution_and_n_is_checked():
    for n in (1, 3, 8):
        w = best_of_n_weights(8, n)
        assert w.sum() == pytest.approx(1.0) and (w[: n - 1] == 0).all()   # the n−1 lowest are never the max
    with pytest.raises(ValueError, match="1 <= n <= N"):
        best_of_n_weights(4, 5)
    with pytest.raises(ValueError, match="N samples, B prompts"):
        best_of_n_curve([[1.0, 2.0]], [[1.0]], [1])


@pytest.mark.parametrize("alpha, beta", [(0.3, 0.1), (0.05, 0.02)])
def test_the_fits_recover_known_alpha_and_beta(alpha, beta):
    d = np.linspace(0.0, 3.0, 25)
    assert fit_best_of_n(d, gao_best_of_n(d, alpha, beta)) == pytest.approx((alpha, beta), abs=1e-9)
    assert fit_rl(d, gao_rl(d, alpha, beta)) == pytest.approx((alpha, beta), abs=1e-9)
    noisy = gao_rl(d, alpha, beta) + np.random.default_rng(1).normal(scale=1e-3, size=d.shape)
    assert fit_rl(d, noisy) == pytest.approx((alpha, beta), abs=5e-3)


def test_the_forms_start_at_zero_and_turn():
    assert gao_best_of_n(0.0, 0.3, 0.1) == 0 and gao_rl(0.0, 0.3, 0.1) == 0
    assert gao_best_of_n(3.0, 0.3, 0.1) == pytest.approx(0.0)            # d(α − βd) is back to 0 at d = α/β
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_rl([1.0], [0.1])


def test_the_frontier_figure_draws_both_reward_models():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minirlhf.course.plots import RM_COLORS, plot_overoptimisation

    rng = np.random.default_rng(0)
    best_of_n = {rm: best_of_n_curve(rng.normal(size=(8, 3)), rng.uniform(size=(8, 3)), [1, 2, 4, 8])
                 for rm in ("rm_round1", "rm")}
    result = {"sft_gold": best_of_n["rm"][0]["gold"], "sft_train_gold": 0.5, "best_of_n": best_of_n,
              "rl": {"rm_round1": {"kl": [0.0, 0.5, 1.5], "gold": [0.5, 0.55, 0.52], "rm_reward": [0, 1, 2]}},
              "fits": {"best_of_n": {rm: {"alpha": 0.1, "beta": 0.05} for rm in best_of_n},
                       "rl": {"rm_round1": {"alpha": 0.1, "beta": 0.05}}},
              "ppo": {"reward_model": "rm", "beta": 0.1, "kl": 1.0, "gain": 0.04}}
    fig = plot_overoptimisation(result)
    left, right = fig.axes
    assert left.get_xlabel().startswith("KL") and right.get_xlabel() == "d = √KL"
    labels = [line.get_label() for line in right.get_lines()]
    assert "best-of-n, RM-1 (round 1)" in labels and "best-of-n, RM (both rounds)" in labels
    colors = {line.get_label(): line.get_color() for line in right.get_lines()}
    assert colors["best-of-n, RM-1 (round 1)"] == RM_COLORS["rm_round1"]
    with pytest.raises(ValueError, match="missing"):
        plot_overoptimisation({"sft_gold": 0.5})
    plt.close(fig)
