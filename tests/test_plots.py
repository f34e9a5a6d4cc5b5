"""The course's figures: each helper draws what it is given, titles and labels it, and rejects mismatched input."""

import math
import re

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, no window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from minirlhf.course import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _titles(fig: Figure) -> list[str]:
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    if fig._suptitle is not None and fig._suptitle.get_text():
        titles.append(fig._suptitle.get_text())
    return titles


def _check(fig, n_axes: int) -> Figure:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes, [ax.get_title() for ax in fig.axes]
    assert _titles(fig), "figure has no title"
    for ax in fig.axes:
        if ax.get_images() or ax.get_label() == "<colorbar>":
            continue
        assert ax.get_ylabel(), f"panel {ax.get_title()!r} has no y label"
    return fig


def _line(ax, label: str):
    """The line drawn with this legend label."""
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


# ---- synthetic inputs ---------------------------------------------------------------------------------------------

PRETRAIN = {"step": [0, 1, 2, 3], "train_loss": [4.0, 3.0, 2.5, 2.2], "eval_step": [0, 3], "val_loss": [4.1, 2.4]}
SFT = {"epoch": [0, 1, 2], "val_loss": [2.0, 1.5, 1.6], "score": [float("nan"), 0.4, 0.5], "best_epoch": 2}
REWARD = {"step": list(range(40)), "loss": [0.6] * 40, "accuracy": [0.5, 0.7] * 20, "val_step": [19, 39],
          "val_accuracy": [0.6, 0.7], "val_gold_accuracy": [0.65, 0.75]}
PPO = {"rm_reward": [0.1, 0.2, 0.4], "gold": [0.3, 0.35, 0.3], "kl": [0.0, 1.0, 3.0], "entropy": [1.2, 1.1, 1.0],
       "beta": [0.1, 0.12, 0.15]}
FRONTIER = [{"beta": 0.5, "kl": 0.5, "rm_reward": 0.2, "gold": 0.5},
            {"beta": 0.01, "kl": 8.0, "rm_reward": 0.9, "gold": 0.3},
            {"beta": 0.1, "kl": 2.0, "rm_reward": 0.6, "gold": 0.55}]
BON = [{"n": n, "kl": math.log(n) - (n - 1) / n, "gold": 0.4 + 0.02 * n, "rm_reward": 0.1 * n} for n in (1, 4, 16)]
SUMMARY = {name: {"gold": g, "helpful": g, "honest": g, "harmless": 0.9, "well_formed": 0.8,
                  "win_rate_vs_sft": w, "pretrain_val_loss": loss}
           for name, g, w, loss in (("pretrained", 0.2, 0.1, 1.9), ("sft", 0.5, 0.5, 2.0),
                                    ("ppo", 0.6, 0.7, 2.4), ("ppo_ptx", 0.6, 0.68, 2.05))}


# ---- each helper --------------------------------------------------------------------------------------------------


def test_pretrain_loss_draws_both_curves_and_the_floor():
    fig = _check(plots.plot_pretrain_loss(PRETRAIN, entropy_floor=1.8), 1)
    ax = fig.axes[0]
    np.testing.assert_allclose(_line(ax, "validation").get_ydata(), PRETRAIN["val_loss"])
    assert list(_line(ax, "corpus entropy floor").get_ydata()) == [1.8, 1.8]
    assert "nats/token" in ax.get_ylabel()


def test_icl_curve_with_chance_and_ideal():
    curves = {"pretrained": {"shots": [0, 1, 2, 4, 8], "accuracy": [0.1, 0.3, 0.5, 0.6, 0.7]},
              "sft": {"shots": [0, 1, 2, 4, 8], "accuracy": [0.2, 0.3, 0.4, 0.5, 0.5]}}
    fig = _check(plots.plot_icl_curve(curves, chance=0.25, ideal=[0.25, 0.5, 0.75, 0.9, 1.0]), 1)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2, 4, 8]
    assert _line(ax, "pretrained").get_color() == plots.POLICY_COLORS["pretrained"]
    assert list(_line(ax, "ideal copier").get_ydata()) == [0.25, 0.5, 0.75, 0.9, 1.0]


def test_icl_task_curves_draw_learning_recognition_and_the_ceiling():
    icl = {"shots": [0, 1, 2, 4, 8], "accuracy": [0.1, 0.3, 0.5, 0.7, 0.9], "ideal": [0.13, 0.34, 0.51, 0.72, 0.91]}
    task = {"shots": [0, 1, 2, 4, 8], "accuracy": [0.35, 1.0, 1.0, 1.0, 1.0]}
    ax = _check(plots.plot_icl_task_curves(icl, task), 1).axes[0]
    assert list(_line(ax, "ideal copier").get_ydata()) == icl["ideal"]
    assert list(_line(ax, "task recognition (true facts)").get_ydata()) == task["accuracy"]
    with pytest.raises(ValueError, match="ideal has 2"):
        plots.plot_icl_task_curves({**icl, "ideal": [0.1, 0.2]}, task)


def test_probe_loss_marks_the_curriculum():
    history = {"step": [0, 1, 2, 3], "context": [32, 32, 64, 64], "probe_step": [0, 2, 3], "probe_loss": [3.2, 1.0, 0.2]}
    ax = _check(plots.plot_probe_loss(history), 1).axes[0]
    assert list(_line(ax, "lookup probe").get_ydata()) == [3.2, 1.0, 0.2]
    assert any("context 64" in t.get_text() for t in ax.texts)


def test_induction_scores_two_layer_by_head_maps():
    scores = {"previous_token": [[0.6, 0.1], [0.1, 0.1]], "induction": [[0.0, 0.0], [0.3, 0.02]]}
    fig = _check(plots.plot_induction_scores(scores), 4)   # two maps and their colour bars
    maps = [ax for ax in fig.axes if ax.get_images()]
    np.testing.assert_allclose(maps[1].get_images()[0].get_array(), scores["induction"])
    assert [ax.get_ylabel() for ax in maps] == ["layer", "layer"]


def test_sft_history_has_two_y_axes_and_marks_best_epoch():
    fig = _check(plots.plot_sft_history(SFT), 2)
    left = fig.axes[0]
    assert left.get_title() == "SFT: validation loss vs score"
    assert list(_line(left, "selected (epoch 2)").get_xdata()) == [2, 2]


def test_reward_history_smooths_train_accuracy():
    fig = _check(plots.plot_reward_history(REWARD, ceiling=0.8), 1)
    ax = fig.axes[0]
    smooth = _line(ax, "train (mean of 2 batches)").get_ydata()
    assert smooth[0] == 0.5 and np.allclose(smooth[1:], 0.6)  # alternating 0.5/0.7, window 2
    assert list(_line(ax, "labelers' agreement ceiling").get_ydata()) == [0.8, 0.8]


def test_smooth_matches_a_slow_reference():
    v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    slow = [np.mean(v[max(0, i - 2):i + 1]) for i in range(len(v))]
    np.testing.assert_allclose(plots._smooth(v, 3), slow)


def test_reward_distributions_share_bins():
    rng = np.random.default_rng(0)
    groups = {"pretrained": rng.normal(-1, 1, 50), "sft": rng.normal(0, 1, 50), "demonstrations": rng.normal(1, 1, 30)}
    fig = _check(plots.plot_reward_distributions(groups), 1)
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 30  # 30 shared bins per group
    assert sum(p.get_height() for p in ax.patches[:30]) == 50


def test_probe_accuracy_bars_and_target():
    probes = {"wrong fact": 0.95, "rude": 0.99, "no EOS": 0.6, "repeats": 0.85}
    fig = _check(plots.plot_probe_accuracy(probes, target=0.9), 1)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == list(probes.values())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(probes)


def test_ppo_history_one_panel_per_key():
    fig = _check(plots.plot_ppo_history(PPO), 4)
    assert [ax.get_title() for ax in fig.axes] == ["rm_reward", "gold", "kl", "entropy"]
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), PPO["kl"])
    assert list(fig.axes[2].get_lines()[0].get_xdata()) == [0, 1, 2]
    _check(plots.plot_ppo_history(PPO, keys=("kl", "beta", "entropy")), 3)  # 2x2 grid, spare panel removed


def test_ppo_history_accepts_several_runs_and_given_axes():
    _, axes = plt.subplots(1, 2)
    fig = _check(plots.plot_ppo_history({"ppo": PPO, "ppo_ptx": PPO}, keys=("gold", "kl"), axes=axes), 2)
    colors = [ln.get_color() for ln in fig.axes[0].get_lines()]
    assert colors == [plots.POLICY_COLORS["ppo"], plots.POLICY_COLORS["ppo_ptx"]]


def test_ppo_comparison():
    fig = _check(plots.plot_ppo_comparison({"ppo": PPO, "PPO-ptx": PPO}, "gold"), 1)
    assert _line(fig.axes[0], "PPO-ptx").get_color() == plots.POLICY_COLORS["ppo_ptx"]


def test_token_heatmap_is_centred_at_zero():
    tokens = ["bobo", "likes", "red", ".", "<eos>"]
    rows = {"KL penalty": [0.1, -0.2, 0.05, 0.0, 0.3], "advantage": [1.0, 0.5, -2.0, 0.2, 0.1]}
    fig = _check(plots.plot_token_heatmap(tokens, rows), 2)  # heatmap + colourbar
    ax = fig.axes[0]
    image = ax.get_images()[0]
    assert image.get_array().shape == (2, 5)
    assert image.norm.vcenter == 0 and image.norm.vmin == -2.0 and image.norm.vmax == 2.0
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens


def test_frontier_two_panels_sorted_by_kl_with_beta_labels():
    fig = _check(plots.plot_frontier(FRONTIER, best_of_n=BON), 2)
    assert "over-optimisation" in fig._suptitle.get_text()
    left, right = fig.axes
    assert list(_line(left, "PPO, rm_reward").get_xdata()) == [0.5, 2.0, 8.0]
    assert list(_line(right, "PPO, gold").get_ydata()) == [0.5, 0.55, 0.3]
    assert {t.get_text() for t in left.texts} >= {"β=0.5", "β=0.1", "β=0.01", "n=16"}
    assert _line(right, "best-of-n, gold").get_color() == plots.POLICY_COLORS["best_of_n"]


def test_frontier_on_a_given_ax_uses_two_y_axes():
    _, ax = plt.subplots()
    fig = _check(plots.plot_frontier(FRONTIER, ax=ax), 2)
    assert "over-optimisation" in fig.axes[0].get_title()


def test_policy_bars_grouped():
    fig = _check(plots.plot_policy_bars(SUMMARY), 1)
    ax = fig.axes[0]
    assert len(ax.patches) == len(SUMMARY) * len(plots.CRITERIA)
    sft_bars = ax.patches[6:12]  # one bar container per policy, in summary order
    assert [p.get_height() for p in sft_bars] == [0.5, 0.5, 0.5, 0.9, 0.8, 0.5]
    assert {p.get_facecolor() for p in sft_bars} == {matplotlib.colors.to_rgba(plots.POLICY_COLORS["sft"])}


def test_alignment_tax_labels_points():
    fig = _check(plots.plot_alignment_tax(SUMMARY), 1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == list(SUMMARY)
    assert ax.collections[2].get_offsets().tolist() == [[2.4, 0.7]]


def test_policy_color_normalises_names():
    assert plots.policy_color("PPO-ptx") == plots.POLICY_COLORS["ppo_ptx"]
    assert plots.policy_color("best-of-16") == plots.POLICY_COLORS["best_of_n"]
    assert plots.policy_color("demonstrations") is None


# ---- saving -------------------------------------------------------------------------------------------------------


def test_save_figure_writes_a_png_atomically(tmp_path):
    fig = plots.plot_pretrain_loss(PRETRAIN)
    path = plots.save_figure(fig, tmp_path / "figs" / "pretrain.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["pretrain.png"]  # no temp file left behind
    plots.save_figure(plots.plot_sft_history(SFT), path)  # overwrite in place
    assert path.read_bytes()[:8] == PNG_MAGIC


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: plots.plot_pretrain_loss({**PRETRAIN, "val_loss": [4.1]}), "eval_step has 2, val_loss has 1"),
    (lambda: plots.plot_icl_curve({"sft": {"shots": [0, 1], "accuracy": [0.1]}}), "shots has 2, accuracy has 1"),
    (lambda: plots.plot_icl_curve({"sft": {"shots": [0, 1], "accuracy": [0.1, 0.2]}}, ideal=[1.0]), "ideal has 1"),
    (lambda: plots.plot_induction_scores({"previous_token": [[0.5]], "induction": [[0.1, 0.2]]}), "same (layers, heads)"),
    (lambda: plots.plot_sft_history({**SFT, "score": [0.1]}), "score has 1"),
    (lambda: plots.plot_reward_history({**REWARD, "accuracy": [0.5]}), "step has 40, accuracy has 1"),
    (lambda: plots.plot_reward_history({**REWARD, "val_gold_accuracy": [0.5]}), "val_gold_accuracy has 1"),
    (lambda: plots.plot_reward_distributions({"sft": []}), "at least one reward"),
    (lambda: plots.plot_ppo_history({**PPO, "kl": [0.0]}), "rm_reward has 3, gold has 3, kl has 1"),
    (lambda: plots.plot_ppo_history(PPO, keys=("value_loss",)), "has no 'value_loss'"),
    (lambda: plots.plot_ppo_comparison({"ppo": PPO, "ppo_ptx": {"gold": [1.0]}}, "kl"), "'ppo_ptx' has no 'kl'"),
    (lambda: plots.plot_token_heatmap(["a", "b"], {"advantage": [1.0]}), "tokens has 2, row has 1"),
    (lambda: plots.plot_frontier([{"beta": 0.1, "kl": 1.0, "gold": 0.3}]), "missing ['rm_reward']"),
    (lambda: plots.plot_policy_bars({"sft": {"gold": 0.5}}), "summary of 'sft' is missing"),
    (lambda: plots.plot_alignment_tax({"ppo": {"win_rate_vs_sft": 0.6}}), "missing ['pretrain_val_loss']"),
])
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_saved_figures_are_as_readable_as_the_other_outputs(tmp_path):
    import os

    import matplotlib.pyplot as plt

    from minirlhf.course.plots import save_figure

    fig = plt.figure()
    path = save_figure(fig, tmp_path / "figure.png")
    plt.close(fig)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask   # not mkstemp's 0600
