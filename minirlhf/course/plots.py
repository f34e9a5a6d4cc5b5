"""The figures of the course: one small function per figure, so every notebook and the pipeline's report look alike.

Each function takes the plain dicts and lists the package produces (the history dicts of `pretrain`, `sft`,
`reward` and `ppo`, the summaries of `evaluate` and `pipeline`), draws on a given matplotlib `ax` (or makes a
figure when `ax` is None) and returns the Figure. Every figure is titled, its axes are labelled with units, and
each policy keeps one colour throughout the course (see `POLICY_COLORS`). `save_figure` writes a PNG atomically.

This module does not choose a matplotlib backend: notebooks keep their inline backend, and scripts without a
display fall back to Agg on their own (or set `MPLBACKEND=Agg`).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from minirlhf import distributed

# One colour per policy, everywhere in the course.
POLICY_COLORS = {
    "pretrained": "tab:gray",
    "sft": "tab:blue",
    "ppo": "tab:orange",
    "ppo_ptx": "tab:green",
    "best_of_n": "tab:purple",
}

# Axis labels (with units) for the keys of a PPO history.
PPO_LABELS = {
    "rm_reward": "RM reward r_θ(x, y)",
    "score": "reward incl. penalties",
    "gold": "gold score (0–1)",
    "kl": "KL(π_RL ‖ π_SFT) (nats/seq, k1)",
    "kl_k3": "KL(π_RL ‖ π_SFT) (nats/seq, k3)",
    "beta": "KL coefficient β",
    "entropy": "entropy (nats/token)",
    "clipfrac": "clip fraction",
    "value_clipfrac": "value clip fraction",
    "approx_kl": "approx KL old→new (nats/token)",
    "value_loss": "value loss",
    "policy_loss": "policy loss",
    "ptx_loss": "pre-training loss (nats/token)",
    "explained_variance": "explained variance",
    "response_length": "response length (tokens)",
    "ended_fraction": "fraction ended with EOS",
}

DPI = 110
_GRID = {"alpha": 0.3, "linewidth": 0.6}


def policy_color(name: str) -> str | None:
    """The course colour of a policy ("PPO-ptx", "ppo_ptx", "best-of-16" all work); None lets matplotlib choose."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key.startswith("best_of") or key.startswith("bon"):
        return POLICY_COLORS["best_of_n"]
    return POLICY_COLORS.get(key)


def save_figure(fig: Figure, path) -> Path:
    """Write `fig` as a PNG (dpi 110) atomically: to a temp file in the same folder, then os.replace.
    Under torchrun only the main process writes; the others wait until it has."""
    path = Path(path)
    if not distributed.is_main():
        distributed.barrier()
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a figure is as readable as the other outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    distributed.barrier()
    return path


# ---- small shared helpers ---------------------------------------------------------------------------------------


def _fig_ax(ax, figsize=(6, 4)):
    """(figure, axes): the figure of a given `ax`, or a new one-panel figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    """Title, axis labels, light grid, and a legend when something is labelled."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, **_GRID)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _same_length(what: str, **lists) -> None:
    """Raise a ValueError naming the lists whose lengths differ."""
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{what}: these lists must have the same length, but {detail}")


def _require(what: str, mapping: dict, keys) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ValueError(f"{what} is missing {missing}; it has {sorted(mapping)}")


def _smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (shorter window at the start), so the curve starts at the first point."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(i - window, 0)
    return (c[i] - c[lo]) / (i - lo)


# ---- pre-training -------------------------------------------------------------------------------------------------


def plot_pretrain_loss(history: dict, entropy_floor: float | None = None, ax=None) -> Figure:
    """Train and validation cross-entropy vs step; the corpus entropy is the floor no model can go below."""
    _require("pre-training history", history, ("step", "train_loss", "eval_step", "val_loss"))
    _same_length("pre-training history", step=history["step"], train_loss=history["train_loss"])
    _same_length("pre-training history", eval_step=history["eval_step"], val_loss=history["val_loss"])
    fig, ax = _fig_ax(ax)
    ax.plot(history["step"], history["train_loss"], color="tab:blue", alpha=0.6, lw=1, label="train")
    ax.plot(history["eval_step"], history["val_loss"], "o-", color="tab:red", ms=3, label="validation")
    if entropy_floor is not None:
        ax.axhline(entropy_floor, color="black", ls="--", lw=1, label="corpus entropy floor")
    _finish(ax, "Pre-training: next-token loss", "step", "cross-entropy (nats/token)")
    return fig


def plot_icl_curve(curves: dict, chance: float | None = None, ideal=None, ax=None) -> Figure:
    """In-context learning: accuracy vs number of examples in the prompt, one curve per model."""
    fig, ax = _fig_ax(ax)
    shots = []
    for name, c in curves.items():
        _require(f"ICL curve {name!r}", c, ("shots", "accuracy"))
        _same_length(f"ICL curve {name!r}", shots=c["shots"], accuracy=c["accuracy"])
        ax.plot(c["shots"], c["accuracy"], "o-", color=policy_color(name), label=name)
        shots = sorted(set(shots) | set(c["shots"]))
    if ideal is not None:
        _same_length("ideal copier curve", shots=shots, ideal=ideal)
        ax.plot(shots, ideal, ":", color="black", label="ideal copier")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    if shots and min(shots) >= 0:
        ax.set_xscale("symlog", base=2, linthresh=1)  # 0, 1, 2, 4, 8 ... evenly spaced
        ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_ylim(0, 1.02)
    _finish(ax, "In-context learning: accuracy vs shots", "examples in the prompt (shots)", "accuracy (fraction)")
    return fig


def plot_icl_task_curves(icl: dict, icl_task: dict, ax=None) -> Figure:
    """GPT-3's two kinds of in-context learning on one axis: task learning (a mapping made up per episode, that only
    the shots define; the ideal copier is its ceiling) and task recognition (true facts the model knows; the shots
    only say which attribute is asked, so 0 shots is right about one time in three)."""
    _require("task-learning curve", icl, ("shots", "accuracy"))
    _require("task-recognition curve", icl_task, ("shots", "accuracy"))
    _same_length("task-learning curve", shots=icl["shots"], accuracy=icl["accuracy"])
    _same_length("task-recognition curve", shots=icl_task["shots"], accuracy=icl_task["accuracy"])
    fig, ax = _fig_ax(ax)
    ax.plot(icl["shots"], icl["accuracy"], "o-", color="tab:blue", label="task learning (made-up mapping)")
    if "ideal" in icl:
        _same_length("task-learning curve", shots=icl["shots"], ideal=icl["ideal"])
        ax.plot(icl["shots"], icl["ideal"], ":", color="tab:blue", label="ideal copier")
    ax.plot(icl_task["shots"], icl_task["accuracy"], "s-", color="tab:red", label="task recognition (true facts)")
    ax.axhline(1 / 3, color="tab:red", ls="--", lw=1, alpha=0.6, label="1 attribute in 3")
    shots = sorted(set(icl["shots"]) | set(icl_task["shots"]))
    if shots and min(shots) >= 0:
        ax.set_xscale("symlog", base=2, linthresh=1)  # 0, 1, 2, 4, 8 ... evenly spaced
        ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_ylim(0, 1.02)
    _finish(ax, "In-context learning: learning vs recognising the task", "examples in the prompt (shots)",
            "accuracy (fraction)")
    return fig


def plot_probe_loss(history: dict, guess: float | None = math.log(24), ax=None) -> Figure:
    """The loss on re-queried lookup values vs step: it drops abruptly when an induction head forms. Dotted lines
    mark where the sequence-length curriculum lengthens the context (history["context"], when present)."""
    _require("pre-training history", history, ("probe_step", "probe_loss"))
    _same_length("pre-training history", probe_step=history["probe_step"], probe_loss=history["probe_loss"])
    fig, ax = _fig_ax(ax)
    ax.plot(history["probe_step"], history["probe_loss"], "o-", color="tab:purple", ms=3, label="lookup probe")
    if guess is not None:
        ax.axhline(guess, color="gray", ls="--", lw=1, label="guessing among the values")
    context = history.get("context", [])
    for step in range(1, len(context)):
        if context[step] != context[step - 1]:
            ax.axvline(history["step"][step], color="black", ls=":", lw=1)
            ax.text(history["step"][step], 0.98, f"context {context[step]} ", transform=ax.get_xaxis_transform(),
                    va="top", ha="right", rotation=90, fontsize="small")   # vertical: close steps do not overlap
    _finish(ax, "Pre-training: loss on values the context already showed", "step",
            "cross-entropy on re-queried values (nats/token)")
    return fig


def plot_induction_scores(scores: dict, axes=None) -> Figure:
    """Two layer × head maps of `prompting.induction_scores`: attention to the previous token, and (in the second
    copy of a repeated random sequence) to the token after the earlier occurrence: an induction head lights up."""
    _require("induction scores", scores, ("previous_token", "induction"))
    panels = {"previous-token attention": scores["previous_token"], "induction attention": scores["induction"]}
    data = {title: np.asarray(values, dtype=float) for title, values in panels.items()}
    if len({d.shape for d in data.values()}) > 1 or any(d.ndim != 2 or d.size == 0 for d in data.values()):
        raise ValueError("induction scores: previous_token and induction must be the same (layers, heads) lists; "
                         f"got shapes {[d.shape for d in data.values()]}")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    fig = axes[0].figure
    n_layer, n_head = data["induction attention"].shape
    for ax, (title, values) in zip(axes, data.items()):
        vmax = max(float(values.max()), 1e-6)   # each map on its own scale: the heads that stand out are dark
        image = ax.imshow(values, cmap="Purples", vmin=0, vmax=vmax, aspect="auto")
        for (layer, head), v in np.ndenumerate(values):
            ax.text(head, layer, f"{v:.2f}", ha="center", va="center", fontsize="small",
                    color="white" if v > 0.6 * vmax else "black")
        ax.set_xticks(range(n_head))
        ax.set_yticks(range(n_layer))
        ax.set_title(title)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, label="mean attention weight")
    return fig


# ---- SFT and the reward model -------------------------------------------------------------------------------------


def plot_sft_history(history: dict, ax=None) -> Figure:
    """Validation loss (left axis) and gold score (right axis) per epoch; the selected epoch is marked."""
    _require("SFT history", history, ("epoch", "val_loss", "score"))
    _same_length("SFT history", epoch=history["epoch"], val_loss=history["val_loss"], score=history["score"])
    fig, ax = _fig_ax(ax)
    ax.plot(history["epoch"], history["val_loss"], "o-", color="tab:blue", label="validation loss")
    right = ax.twinx()
    right.plot(history["epoch"], history["score"], "s-", color="tab:green", label="gold score")  # NaN: not drawn
    right.set_ylabel("gold score (0–1)", color="tab:green")
    selected = history.get("selected", [])   # train_sft: True at the kept epoch; runs shipped before: best_epoch
    best = history["epoch"][selected.index(True)] if True in selected else history.get("best_epoch")
    if best is not None:
        ax.axvline(best, color="black", ls=":", lw=1, label=f"selected (epoch {best})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, "SFT: validation loss vs score", "epoch", "validation loss (nats/token)", legend=False)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small")
    return fig


def plot_reward_history(history: dict, ceiling: float | None = None, ax=None) -> Figure:
    """Reward-model pairwise accuracy: smoothed train batches, validation points, and the labelers' ceiling."""
    _require("reward history", history, ("step", "accuracy", "val_step", "val_accuracy"))
    _same_length("reward history", step=history["step"], accuracy=history["accuracy"])
    _same_length("reward history", val_step=history["val_step"], val_accuracy=history["val_accuracy"])
    fig, ax = _fig_ax(ax)
    window = max(1, len(history["step"]) // 20)
    ax.plot(history["step"], history["accuracy"], color="tab:blue", alpha=0.2, lw=0.8)
    ax.plot(history["step"], _smooth(history["accuracy"], window), color="tab:blue",
            label=f"train (mean of {window} batches)")
    ax.plot(history["val_step"], history["val_accuracy"], "o-", color="tab:red", ms=4, label="validation")
    gold = history.get("val_gold_accuracy")
    if gold:
        _same_length("reward history", val_step=history["val_step"], val_gold_accuracy=gold)
        ax.plot(history["val_step"], gold, "^--", color="tab:green", ms=4, label="validation vs gold labels")
    if ceiling is not None:
        ax.axhline(ceiling, color="black", ls="--", lw=1, label="labelers' agreement ceiling")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="chance")
    _finish(ax, "Reward model: pairwise accuracy", "step", "accuracy (fraction of pairs)")
    return fig


def plot_reward_distributions(rewards_by_group: dict, ax=None) -> Figure:
    """Overlaid histograms of RM reward per group (e.g. pretrained vs SFT vs demonstrations)."""
    fig, ax = _fig_ax(ax)
    values = [np.asarray(v, dtype=float) for v in rewards_by_group.values()]
    if not values or any(v.size == 0 for v in values):
        sizes = {k: len(v) for k, v in rewards_by_group.items()}
        raise ValueError(f"every group needs at least one reward; got sizes {sizes}")
    bins = np.histogram_bin_edges(np.concatenate(values), bins=30)
    for name, v in zip(rewards_by_group, values):
        ax.hist(v, bins=bins, alpha=0.45, color=policy_color(name), label=f"{name} (mean {v.mean():.2f})")
    _finish(ax, "Reward-model scores by group", "RM reward r_θ(x, y)", "count")
    return fig


def plot_probe_accuracy(probes: dict, target: float = 0.9, ax=None) -> Figure:
    """Bar chart: how often the reward model prefers the good answer, per kind of failure."""
    fig, ax = _fig_ax(ax)
    names, acc = list(probes), list(probes.values())
    colors = ["tab:green" if a >= target else "tab:red" for a in acc]
    ax.bar(names, acc, color=colors)
    for i, a in enumerate(acc):
        ax.text(i, a + 0.01, f"{a:.2f}", ha="center", va="bottom", fontsize="small")
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.2f}")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="chance")
    ax.set_ylim(0, 1.08)
    ax.tick_params(axis="x", labelrotation=30)
    _finish(ax, "Reward-model probes: prefers the good answer", "failure type", "accuracy (fraction)")
    return fig


# ---- PPO ---------------------------------------------------------------------------------------------------------


def _draw_ppo_key(ax, histories: dict, key: str) -> None:
    """One PPO metric vs iteration, one line per named history."""
    for name, h in histories.items():
        if key not in h:
            raise ValueError(f"PPO history {name!r} has no {key!r}; it has {sorted(h)}")
        y = h[key]
        x = h.get("iteration", range(len(y)))
        _same_length(f"PPO history {name!r}", **{"iteration": x, key: y})
        ax.plot(x, y, color=policy_color(name), label=name if len(histories) > 1 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, key, "PPO iteration", PPO_LABELS.get(key, key))


def _as_histories(history: dict) -> dict:
    """A single history (dict of lists) becomes {"ppo": history}; a dict of histories is left as it is."""
    if history and all(isinstance(v, dict) for v in history.values()):
        return history
    return {"ppo": history}


def plot_ppo_history(history: dict, keys=("rm_reward", "gold", "kl", "entropy"), axes=None) -> Figure:
    """A grid of small panels, one per metric, x = PPO iteration. `history` may also be {name: history}."""
    histories = _as_histories(history)
    keys = list(keys)
    for name, h in histories.items():  # one entry per iteration: every metric must have the same length
        _same_length(f"PPO history {name!r}", **{k: h[k] for k in ("iteration", *keys) if k in h})
    if axes is None:
        ncols = math.ceil(math.sqrt(len(keys)))
        nrows = math.ceil(len(keys) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), layout="constrained",
                                 squeeze=False)
        axes = list(grid.flat)
        for extra in axes[len(keys):]:
            extra.remove()
    else:
        axes = list(np.ravel(axes))
        fig = axes[0].figure
    if len(axes) < len(keys):
        raise ValueError(f"{len(keys)} keys {keys} need {len(keys)} axes; got {len(axes)}")
    for ax, key in zip(axes, keys):
        _draw_ppo_key(ax, histories, key)
    fig.suptitle("PPO training: " + ", ".join(histories))
    return fig


def plot_ppo_comparison(histories: dict, key: str, ax=None) -> Figure:
    """One metric of several PPO runs on one panel (e.g. gold score of PPO vs PPO-ptx)."""
    fig, ax = _fig_ax(ax)
    _draw_ppo_key(ax, histories, key)
    ax.set_title(f"PPO runs compared: {key}")
    return fig


def plot_token_heatmap(tokens: list, rows: dict, ax=None) -> Figure:
    """Per-token quantities of one response (e.g. KL penalty, advantage): rows = labels, columns = tokens."""
    if not rows or not tokens:
        raise ValueError(f"token heatmap needs at least one row and one token; got {len(rows)} rows, {len(tokens)} tokens")
    for label, values in rows.items():
        _same_length(f"token heatmap row {label!r}", tokens=tokens, row=values)
    fig, ax = _fig_ax(ax, figsize=(max(4, 0.45 * len(tokens) + 2), 0.5 * len(rows) + 1.8))
    data = np.array(list(rows.values()), dtype=float).reshape(len(rows), len(tokens))  # (labels, tokens)
    vmax = max(float(np.nanmax(np.abs(data))) if data.size else 0.0, 1e-12)
    image = ax.imshow(data, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(len(rows)), list(rows))
    fig.colorbar(image, ax=ax, label="value (0 = white)")
    ax.set_title("Per-token view of one response")
    ax.set_xlabel("response token")
    return fig


def plot_frontier(points: list, best_of_n: list | None = None, ax=None) -> Figure:
    """The reward–KL frontier: RM reward (proxy) and gold score vs KL to SFT, one point per β; best-of-n too.

    With ax=None: two panels side by side (RM left, gold right). With an ax: RM on the left axis, gold on the right.
    """
    for p in points:
        _require("frontier point", p, ("beta", "kl", "rm_reward", "gold"))
    for b in best_of_n or []:
        _require("best-of-n point", b, ("n", "kl", "rm_reward", "gold"))
    if ax is None:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    else:
        fig, left = ax.figure, ax
        right = ax.twinx()
    points = sorted(points, key=lambda p: p["kl"])
    bon = sorted(best_of_n or [], key=lambda b: b["kl"])
    for panel, key, label, marker in ((left, "rm_reward", "RM reward r_θ (proxy)", "o"),
                                      (right, "gold", "gold score (0–1)", "s")):
        panel.plot([p["kl"] for p in points], [p[key] for p in points], marker + "-", color=POLICY_COLORS["ppo"],
                   label=f"PPO, {key}")
        for p in points:
            panel.annotate(f"β={p['beta']:g}", (p["kl"], p[key]), textcoords="offset points", xytext=(4, 4),
                           fontsize="x-small")
        if bon:
            panel.plot([b["kl"] for b in bon], [b[key] for b in bon], marker + "--",
                       color=POLICY_COLORS["best_of_n"], label=f"best-of-n, {key}")
            for b in bon:
                panel.annotate(f"n={b['n']}", (b["kl"], b[key]), textcoords="offset points", xytext=(4, -10),
                               fontsize="x-small", color=POLICY_COLORS["best_of_n"])
        panel.set_ylabel(label)
    title = "Proxy (RM) vs gold reward as KL grows: over-optimisation"
    xlabel = "KL(π ‖ π_SFT) (nats/seq)"
    if ax is None:
        _finish(left, "RM reward (what PPO optimises)", xlabel, "RM reward r_θ (proxy)")
        _finish(right, "gold score (what we want)", xlabel, "gold score (0–1)")
        fig.suptitle(title)
    else:
        _finish(left, title, xlabel, "RM reward r_θ (proxy)", legend=False)
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        left.legend(handles=handles, fontsize="small")
    return fig


RM_COLORS = {"rm_round1": "tab:brown", "rm": "tab:purple"}   # the over-optimisation figure: one colour per RM
RM_NAMES = {"rm_round1": "RM-1 (round 1)", "rm": "RM (both rounds)"}


def plot_overoptimisation(result: dict, fig=None) -> Figure:
    """Gao et al.'s picture: gold gain over SFT vs KL (left) and vs d = √KL (right), per reward model.

    result: overoptimisation.json of a run (pipeline.stage_overoptimisation): best-of-n curves and PPO-at-β=0
    histories per RM, the fitted (α, β) of gold(d) = d(α − βd) (best-of-n) and d(α − β log d) (RL), the main PPO.
    """
    from minirlhf.overoptimisation import gao_best_of_n, gao_rl

    _require("over-optimisation result", result, ("sft_gold", "sft_train_gold", "best_of_n", "rl", "fits", "ppo"))
    if fig is None:
        fig = plt.figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for panel, to_x in ((left, np.square), (right, np.asarray)):
        for rm, curve in result["best_of_n"].items():
            d = np.sqrt([c["kl"] for c in curve])
            panel.plot(to_x(d), [c["gold"] - result["sft_gold"] for c in curve], "o", color=RM_COLORS.get(rm),
                       label=f"best-of-n, {RM_NAMES.get(rm, rm)}")
            fit, d_line = result["fits"]["best_of_n"][rm], np.linspace(0.0, d.max(), 50)
            panel.plot(to_x(d_line), gao_best_of_n(d_line, fit["alpha"], fit["beta"]), "-", color=RM_COLORS.get(rm),
                       lw=1)
        for rm, h in result["rl"].items():
            d = np.sqrt(np.maximum(h["kl"], 0.0))
            panel.plot(to_x(d), np.asarray(h["gold"]) - result["sft_train_gold"], ".", color=RM_COLORS.get(rm),
                       alpha=0.35, label=f"PPO β = 0 (each iteration), {RM_NAMES.get(rm, rm)}")
            fit, d_line = result["fits"]["rl"][rm], np.linspace(0.0, d.max(), 50)
            panel.plot(to_x(d_line), gao_rl(d_line, fit["alpha"], fit["beta"]), "--", color=RM_COLORS.get(rm), lw=1)
        ppo = result["ppo"]
        panel.plot(to_x(np.sqrt([max(ppo["kl"], 0.0)])), [ppo["gain"]], "*", ms=12, color=POLICY_COLORS["ppo"],
                   label=f"PPO β = {ppo['beta']:g}, {RM_NAMES.get(ppo['reward_model'], ppo['reward_model'])}")
        panel.axhline(0.0, color="gray", ls=":", lw=1)
    ylabel = "gold − SFT's gold"
    _finish(left, "vs KL", "KL(π ‖ π_SFT) (nats/answer)", ylabel, legend=False)
    _finish(right, "vs d = √KL: lines are Gao et al.'s fits", "d = √KL", ylabel)
    fig.suptitle("Over-optimisation: gold gain as the policy moves away from SFT (solid: best-of-n, dashed: RL)")
    return fig


# ---- evaluation ---------------------------------------------------------------------------------------------------

CRITERIA = ("gold", "helpful", "honest", "harmless", "well_formed", "win_rate_vs_sft")


def plot_policy_bars(summary: dict, ax=None) -> Figure:
    """Grouped bars: for each criterion, one bar per policy (course colours)."""
    for name, s in summary.items():
        _require(f"summary of {name!r}", s, CRITERIA)
    fig, ax = _fig_ax(ax, figsize=(8, 4))
    width = 0.8 / max(len(summary), 1)
    x = np.arange(len(CRITERIA))
    for i, (name, s) in enumerate(summary.items()):
        ax.bar(x + (i - (len(summary) - 1) / 2) * width, [s[c] for c in CRITERIA], width,
               color=policy_color(name), label=name)
    ax.set_xticks(x, [c.replace("_", " ") for c in CRITERIA])
    ax.set_ylim(0, 1.05)
    _finish(ax, "Policies compared on the gold criteria", "criterion", "mean score / win rate (0–1)")
    return fig


def plot_alignment_tax(summary: dict, ax=None) -> Figure:
    """Alignment tax: win rate vs SFT against pre-training loss (lower-right is better on both)."""
    for name, s in summary.items():
        _require(f"summary of {name!r}", s, ("win_rate_vs_sft", "pretrain_val_loss"))
    fig, ax = _fig_ax(ax)
    for name, s in summary.items():
        ax.scatter(s["pretrain_val_loss"], s["win_rate_vs_sft"], s=60, color=policy_color(name), zorder=3)
        ax.annotate(name, (s["pretrain_val_loss"], s["win_rate_vs_sft"]), textcoords="offset points",
                    xytext=(6, 4), fontsize="small")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="tie with SFT")
    _finish(ax, "Alignment tax: win rate vs pre-training loss", "pre-training validation loss (nats/token)",
            "win rate vs SFT (fraction)")
    return fig


# ---- DPO ---------------------------------------------------------------------------------------------------------


def plot_dpo_history(history: dict, smooth: int = 5, axes=None) -> Figure:
    """A DPO run (dpo.train_dpo's history): the implicit reward r̂ = β·log(π/π_ref) of the chosen and the rejected
    answers and their margin, the pairwise accuracy of r̂, and the loss against log 2 (π = π_ref); x = Adam step.
    Training curves are smoothed over `smooth` steps; validation points are markers."""
    _require("DPO history", history, ("step", "loss", "accuracy", "chosen", "rejected", "margin"))
    _same_length("DPO history", **{k: history[k] for k in ("step", "loss", "accuracy", "chosen", "rejected", "margin")})
    val = bool(history.get("val_step"))
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    if len(np.ravel(axes)) != 3:
        raise ValueError(f"plot_dpo_history draws 3 panels (implicit reward, accuracy, loss); got {len(np.ravel(axes))} axes")
    fig = np.ravel(axes)[0].figure
    ax_r, ax_acc, ax_loss = np.ravel(axes)
    step = history["step"]
    for key, color in (("chosen", "tab:green"), ("rejected", "tab:red"), ("margin", "black")):
        ax_r.plot(step, _smooth(history[key], smooth), color=color, label=key)
        if val:
            ax_r.plot(history["val_step"], history[f"val_{key}"], "o", color=color, ms=5)
    ax_r.axhline(0, color="gray", lw=0.8)
    _finish(ax_r, "implicit reward r̂ = β·log(π/π_ref)", "DPO step", "mean r̂ over pairs (reward units)")
    ax_acc.plot(step, _smooth(history["accuracy"], smooth), color="tab:red", label="train")
    if val:
        ax_acc.plot(history["val_step"], history["val_accuracy"], "o", color="tab:red", ms=5, label="val")
    ax_acc.set_ylim(-0.02, 1.02)
    _finish(ax_acc, "pairs where r̂_w > r̂_l", "DPO step", "accuracy (fraction of pairs)")
    ax_loss.plot(step, _smooth(history["loss"], smooth), color="tab:red", label="train")
    if val:
        ax_loss.plot(history["val_step"], history["val_loss"], "o", color="tab:red", ms=5, label="val")
    ax_loss.axhline(math.log(2), color="gray", ls=":", lw=1, label="log 2 (π = π_ref)")
    _finish(ax_loss, "DPO loss", "DPO step", "−log σ(r̂_w − r̂_l) (nats)")
    fig.suptitle("DPO training: the implicit reward of the chosen and the rejected answers"
                 + (" (lines: training batches, smoothed; dots: held-out comparisons)" if val else ""))
    return fig
