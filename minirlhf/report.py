"""The report card of a pipeline run: `report.md` with one table per stage, and the PNG figures beside it."""

from __future__ import annotations

import json
from pathlib import Path

from minirlhf.checkpoint import read_metadata, write_text_atomic

POLICY_NAMES = {"pretrained": "pre-trained (prompted)", "sft": "SFT", "ppo": "PPO", "ppo_ptx": "PPO-ptx"}


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_figures(run: Path, metrics: dict) -> list[str]:
    """Draw the run's figures into the run folder; returns their file names."""
    import matplotlib.pyplot as plt

    from minirlhf import plots

    names = []

    def save(fig, name):
        plots.save_figure(fig, run / name)
        plt.close(fig)
        names.append(name)

    pre = run / "pretrained"
    if (pre / "metadata.json").exists():
        meta = read_metadata(pre)
        save(plots.plot_pretrain_loss(meta["history"], meta["metrics"].get("entropy_floor")), "pretrain_loss.png")
        if "icl" in meta["metrics"]:
            save(plots.plot_icl_curve({"pre-trained": meta["metrics"]["icl"]}, chance=1 / 8), "icl_curve.png")
    if (run / "sft" / "metadata.json").exists():
        save(plots.plot_sft_history(read_metadata(run / "sft")["history"]), "sft_history.png")
    if (run / "rm" / "metadata.json").exists():
        meta = read_metadata(run / "rm")
        save(plots.plot_reward_history(meta["history"], meta["metrics"].get("ceiling")), "rm_history.png")
        save(plots.plot_probe_accuracy(meta["metrics"]["probes"]), "rm_probes.png")
    histories = {n: read_metadata(run / n)["history"] for n in ("ppo", "ppo_ptx") if (run / n / "metadata.json").exists()}
    if histories:
        save(plots.plot_ppo_history(histories.get("ppo") or histories["ppo_ptx"]), "ppo_history.png")
    if (run / "beta_sweep.json").exists() and (run / "evaluation.json").exists():
        evaluation = json.loads((run / "evaluation.json").read_text())
        sweep = json.loads((run / "beta_sweep.json").read_text())["points"]
        save(plots.plot_frontier(sweep, evaluation.get("best_of_n")), "frontier.png")
        save(plots.plot_policy_bars(evaluation["policies"]), "policies.png")
        save(plots.plot_alignment_tax(evaluation["policies"]), "alignment_tax.png")
    return names


def report_markdown(metrics: dict, evaluation: dict | None, sweep: list | None, figures: list[str]) -> str:
    """The report card as Markdown."""
    out = [f"# minirlhf report card — preset `{metrics.get('preset')}`, seed {metrics.get('seed')}", ""]
    pre = metrics.get("pretrained", {})
    if pre:
        out += ["## Pre-training (L1)", "",
                _table(["parameters", "val loss (nats/token)", "entropy floor", "gap", "tokens/s", "seconds"],
                       [[pre.get("parameters"), pre.get("val_loss"), pre.get("entropy_floor"),
                         (pre.get("val_loss") or 0) - (pre.get("entropy_floor") or 0), pre.get("tokens_per_s"),
                         pre.get("seconds")]]), ""]
        if "icl" in pre:
            out += ["In-context learning (accuracy vs shots): " + ", ".join(
                f"{k}: {a:.2f}" for k, a in zip(pre["icl"]["shots"], pre["icl"]["accuracy"])), ""]
    sft = metrics.get("sft", {})
    if sft:
        out += ["## Step 1 — SFT", "", _table(["demonstrations", "selected epoch", "val loss", "val gold"],
                                                [[sft.get("demonstrations"), sft.get("best_epoch"), sft.get("val_loss"),
                                                  sft.get("val_gold")]]), ""]
    rm = metrics.get("rm", {})
    if rm:
        out += ["## Step 2 — reward model", "",
                _table(["val accuracy (noisy labels)", "labelers' ceiling", "accuracy / ceiling", "vs gold order"],
                       [[rm.get("val_accuracy"), rm.get("ceiling"), rm.get("val_accuracy", 0) / max(rm.get("ceiling", 1), 1e-9),
                         rm.get("val_gold_accuracy")]]), "",
                "Probe accuracy per failure type:", "",
                _table(["failure type", "accuracy"], [[k, v] for k, v in rm.get("probes", {}).items()]), ""]
    if evaluation:
        rows = [[POLICY_NAMES.get(n, n), r["gold"], r["helpful"], r["honest"], r["harmless"], r["well_formed"],
                 r["win_rate_vs_sft"], r["kl_to_sft"], r["rm_reward"], r["pretrain_val_loss"]]
                for n, r in evaluation["policies"].items()]
        out += ["## Step 3 — PPO, PPO-ptx, and evaluation on held-out test prompts", "",
                _table(["policy", "gold", "helpful", "honest", "harmless", "well-formed", "win rate vs SFT",
                        "KL to SFT (nats)", "RM reward", "pre-train loss"], rows), ""]
        if evaluation.get("best_of_n"):
            out += ["Best-of-n on the SFT policy (KL = log n − (n−1)/n):", "",
                    _table(["n", "KL", "gold", "RM reward", "win rate vs SFT"],
                           [[b["n"], b["kl"], b["gold"], b["rm_reward"], b.get("win_rate_vs_sft")]
                            for b in evaluation["best_of_n"]]), ""]
    if sweep:
        out += ["## The β sweep: reward–KL frontier", "",
                _table(["β", "KL to SFT", "RM reward (proxy)", "gold"],
                       [[p["beta"], p["kl"], p["rm_reward"], p["gold"]] for p in sweep]), ""]
    timing = metrics.get("wall_seconds", {})
    if timing:
        out += ["## Wall time and memory", "",
                _table(["stage", "seconds", "peak RSS (MB)"],
                       [[k, v, metrics.get("peak_rss_mb", {}).get(k)] for k, v in timing.items()]), ""]
    out += [f"![{name}]({name})" for name in figures]
    return "\n".join(out) + "\n"


def write_report(run: Path, metrics: dict) -> Path:
    run = Path(run)
    evaluation = json.loads((run / "evaluation.json").read_text()) if (run / "evaluation.json").exists() else None
    sweep = json.loads((run / "beta_sweep.json").read_text())["points"] if (run / "beta_sweep.json").exists() else None
    figures = write_figures(run, metrics)
    return write_text_atomic(run / "report.md", report_markdown(metrics, evaluation, sweep, figures))
