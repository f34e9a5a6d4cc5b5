"""The report card of a pipeline run: `report.md` with one table per stage, and the PNG figures beside it.

Also README's results section ("What the course run measures"), rendered from the shipped run's metrics.json so
that README never disagrees with the run: `python -m minirlhf.report` rewrites it between the README_BEGIN and
README_END markers (after `python -m minirlhf ship runs/course`), and tests/test_readme.py checks it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from minirlhf.checkpoint import read_metadata, write_text_atomic
from minirlhf.course.shipped import DATA

POLICY_NAMES = {"pretrained": "pre-trained (prompted)", "sft": "SFT", "ppo": "PPO", "ppo_ptx": "PPO-ptx"}
CHANCE = 1 / 8   # a guess among the 8 values of an attribute (world.VALUES): zero-shot facts and ICL


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

    from minirlhf.course import plots

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
            save(plots.plot_icl_curve({"pre-trained": meta["metrics"]["icl"]}, chance=CHANCE), "icl_curve.png")
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


# ----------------------------------------------------------------------------------------------------------
# README's results section, from metrics.json

README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
README = DATA.parent / "README.md"


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _slashed(values, digits: int = 3) -> str:
    return "/".join(v if isinstance(v, str) else f"{v:.{digits}f}" for v in values)


def _results_table(metrics: dict, ptx_coef: float) -> list[str]:
    """The policies' table: gold score and criteria, win rate vs SFT, KL to SFT, pre-training loss."""
    beta = metrics["ppo"]["beta"]
    names = POLICY_NAMES | {"ppo": f"PPO (β = {beta:g})", "ppo_ptx": f"PPO-ptx (γ = {ptx_coef:g})"}
    lines = ["| policy | gold score | helpful | honest | harmless | well-formed | win rate vs SFT | KL to SFT (nats) "
             "| pre-training loss |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in metrics["evaluation"]["policies"].items():
        kl = f"{r['kl_to_sft']:.2f}" if r["kl_to_sft"] else "0"
        cells = [names.get(name, name), *(f"{r[k]:.3f}" for k in ("gold", "helpful", "honest", "harmless",
                                                                  "well_formed", "win_rate_vs_sft")),
                 kl, f"{r['pretrain_val_loss']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _results_bullets(metrics: dict, ptx_coef: float) -> list[str]:
    """One bullet per stage, every number read from metrics.json (one line each: readme_results wraps them)."""
    pre, sft, rm = metrics["pretrained"], metrics["sft"], metrics["rm"]
    pol, beta = metrics["evaluation"]["policies"], metrics["ppo"]["beta"]
    bon, sweep = metrics["evaluation"]["best_of_n"], metrics["beta_sweep"]["points"]
    zero_shot = ", ".join(f"{_pct(a)} ({attr})" for attr, a in pre["zero_shot"].items())
    probe_name = {"wrong_fact": "wrong fact", "off_topic": "off-topic"}
    probes = ", ".join(f"{probe_name.get(k, k)} {v:.2f}" for k, v in rm["probes"].items())
    blind = min(rm["probes"], key=rm["probes"].get)
    seconds = ", ".join(f"{stage} {t:.0f} s" for stage, t in metrics["wall_seconds"].items())
    return [
        f"- **Pre-training**: validation loss {pre['val_loss']:.3f} nats/token against the corpus's entropy floor "
        f"of {pre['entropy_floor']:.3f} (gap {pre['val_loss'] - pre['entropy_floor']:.2f}); zero-shot facts "
        f"{zero_shot} against a chance of {100 * CHANCE:.1f} %. In-context learning: "
        f"{_slashed(map(str, pre['icl']['shots']))} shots give {_slashed(pre['icl']['accuracy'], 2)}.",
        f"- **SFT** ({sft['demonstrations']} demonstrations, epoch {sft['best_epoch']} selected by its validation "
        f"gold score, {sft['val_gold']:.3f}): wins {_pct(1 - pol['pretrained']['win_rate_vs_sft'])} of the "
        "comparisons against the prompted pre-trained model.",
        f"- **Reward model**: {rm['val_accuracy']:.3f} pairwise accuracy against the noisy labels, "
        f"{_pct(rm['val_accuracy'] / rm['ceiling'])} of the labelers' ceiling ({rm['ceiling']:.3f}), "
        f"{rm['val_gold_accuracy']:.3f} against the gold order; probes: {probes}. Its blind spot: "
        f"**{probe_name.get(blind, blind)}**.",
        f"- **PPO** (β = {beta:g}) takes the RM's reward on test prompts from {_signed(pol['sft']['rm_reward'])} "
        f"(SFT) to {_signed(pol['ppo']['rm_reward'])} and the gold score from {pol['sft']['gold']:.3f} to "
        f"{pol['ppo']['gold']:.3f}; it wins {_pct(pol['ppo']['win_rate_vs_sft'])} against SFT at a KL of "
        f"{pol['ppo']['kl_to_sft']:.2f} nats. **PPO-ptx** (γ = {ptx_coef:g}) wins "
        f"{_pct(pol['ppo_ptx']['win_rate_vs_sft'])} against SFT at a KL of {pol['ppo_ptx']['kl_to_sft']:.2f} nats, "
        f"with a pre-training loss of {pol['ppo_ptx']['pretrain_val_loss']:.3f} (SFT: "
        f"{pol['sft']['pretrain_val_loss']:.3f}, pre-trained: {pol['pretrained']['pretrain_val_loss']:.3f}).",
        f"- **Over-optimisation**: best-of-n on SFT, n = {_slashed(str(b['n']) for b in bon)}: gold "
        f"{_slashed(b['gold'] for b in bon)}, RM reward {_slashed(_signed(b['rm_reward']) for b in bon)}; "
        f"the β sweep, β = {_slashed(format(p['beta'], 'g') for p in sweep)}: gold "
        f"{_slashed(p['gold'] for p in sweep)}, KL {_slashed((p['kl'] for p in sweep), 2)} "
        f"(the PPO run above has β = {beta:g}).",
        f"- **Wall time** of this run: {seconds}; peak RSS {max(metrics['peak_rss_mb'].values()):.0f} MB "
        "(both depend on the machine and on what else it was running).",
    ]


def readme_results(metrics: dict, ptx_coef: float) -> str:
    """README's results section, markers included, rendered from a course run's metrics.json.

    ptx_coef (γ of PPO-ptx) is not in metrics.json: `shipped_results` reads it from the ppo_ptx checkpoint.
    """
    bullets = [textwrap.fill(b, width=116, subsequent_indent="  ", break_on_hyphens=False)
               for b in _results_bullets(metrics, ptx_coef)]
    return "\n".join([README_BEGIN, "<!-- generated from data/run/metrics.json by `python -m minirlhf.report`: "
                      "do not edit by hand -->", "", *_results_table(metrics, ptx_coef), "", *bullets, README_END])


def shipped_results(data: Path = DATA) -> str:
    """readme_results of the course run shipped under data/ (its metrics.json and its PPO-ptx checkpoint)."""
    metrics_file, ptx = Path(data) / "run" / "metrics.json", Path(data) / "checkpoints" / "ppo_ptx"
    if not metrics_file.exists() or not (ptx / "metadata.json").exists():
        raise FileNotFoundError(f"{metrics_file} or {ptx} is missing: ship a finished run first "
                                "(python -m minirlhf ship runs/course)")
    return readme_results(json.loads(metrics_file.read_text()), read_metadata(ptx)["config"]["ptx_coef"])


def readme_section(text: str) -> str:
    """The text of README between the markers, markers included."""
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise ValueError(f"README must hold {README_BEGIN} and {README_END} once each, in that order")
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    if end < start:
        raise ValueError(f"README's {README_END} comes before {README_BEGIN}")
    return text[start:end]


def update_readme(readme: Path = README, data: Path = DATA) -> bool:
    """Rewrite README's results section from the course run shipped under data/; returns whether README changed."""
    readme = Path(readme)
    text = readme.read_text()
    new = text.replace(readme_section(text), shipped_results(data))
    if new != text:
        write_text_atomic(readme, new)
    return new != text


if __name__ == "__main__":   # python -m minirlhf.report [README [DATA]]
    import sys

    changed = update_readme(*sys.argv[1:3])
    print(f"{sys.argv[1] if len(sys.argv) > 1 else README}: results section " + ("rewritten" if changed else "up to date"))
