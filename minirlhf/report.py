"""The report card of a pipeline run: `report.md` with one table per stage, and the PNG figures beside it.

The lecture's claims, as numbers the gold labeler measures, are named once, in `CLAIMS`: each seed's metrics.json
gets their values (`claim_values`), and a run of several seeds (`pipeline.run_seeds`) their mean and spread, and
whether each is met (`aggregate`, `write_seeds_report`).

Also README's results section ("What the course run measures"), rendered from the shipped run's metrics.json so
that README never disagrees with the run: `python -m minirlhf.report` rewrites it between the README_BEGIN and
README_END markers (after `python -m minirlhf ship runs/course`), and tests/test_readme.py checks it.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minirlhf.checkpoint import read_metadata, write_text_atomic
from minirlhf.course.shipped import DATA

POLICY_NAMES = {"pretrained": "pre-trained (prompted)", "sft": "SFT", "ppo": "PPO", "ppo_ptx": "PPO-ptx"}
CHANCE = 1 / 8   # a guess among the 8 values of an attribute (world.VALUES): zero-shot facts, ICL, follow-ups
TOLERANCE = 0.05  # a claim is met when the seeds' mean meets its target and no seed misses it by more than this


# ----------------------------------------------------------------------------------------------------------
# The lecture's claims, as numbers


def _at_shots(curve: dict, k: int) -> float:
    return curve["accuracy"][curve["shots"].index(k)]


def _policies(m: dict) -> dict:
    return m["evaluation"]["policies"]


def _worst_probe(m: dict) -> float:
    return min(v for v in m["rm"]["probes"].values() if not math.isnan(v))


@dataclass(frozen=True)
class Claim:
    key: str
    text: str                          # the claim, as the number that shows it
    target: float
    direction: str                     # ">=": the number must reach the target; "<=": stay below it
    value: Callable[[dict], float]     # the number, read from one seed's metrics.json


CLAIMS = (
    Claim("icl", "GPT-3 task learning: 8-shot − 0-shot accuracy", 0.50, ">=",
          lambda m: _at_shots(m["pretrained"]["icl"], 8) - _at_shots(m["pretrained"]["icl"], 0)),
    Claim("icl_task", "GPT-3 task recognition: 1-shot − 0-shot accuracy", 0.50, ">=",
          lambda m: _at_shots(m["pretrained"]["icl_task"], 1) - _at_shots(m["pretrained"]["icl_task"], 0)),
    Claim("val_over_floor", "pre-training validation loss ÷ corpus entropy floor", 1.10, "<=",
          lambda m: m["pretrained"]["val_loss"] / m["pretrained"]["entropy_floor"]),
    Claim("sft_win", "SFT beats the prompted pre-trained model (gold win rate)", 0.80, ">=",
          lambda m: 1 - _policies(m)["pretrained"]["win_rate_vs_sft"]),
    Claim("rm_over_ceiling", "RM accuracy ÷ the labelers' agreement ceiling", 0.92, ">=",
          lambda m: m["rm"]["val_accuracy"] / m["rm"]["ceiling"]),
    Claim("rm_worst_probe", "RM's worst failure-type probe", 0.90, ">=", _worst_probe),
    Claim("ppo_win", "PPO beats SFT (gold win rate, ties half)", 0.70, ">=",
          lambda m: _policies(m)["ppo"]["win_rate_vs_sft"]),
    Claim("ppo_ptx_win", "PPO-ptx beats SFT (gold win rate, ties half)", 0.65, ">=",
          lambda m: _policies(m)["ppo_ptx"]["win_rate_vs_sft"]),
    Claim("ptx_tax", "PPO-ptx pays less tax: PPO's − PPO-ptx's pre-training loss", 0.0, ">=",
          lambda m: _policies(m)["ppo"]["pretrain_val_loss"] - _policies(m)["ppo_ptx"]["pretrain_val_loss"]),
    Claim("ppo_gold_gain", "PPO raises gold: PPO's − SFT's gold score", 0.03, ">=",
          lambda m: _policies(m)["ppo"]["gold"] - _policies(m)["sft"]["gold"]),
    Claim("chat_with_history", "chat (PPO): follow-ups answered right, with the history", 0.70, ">=",
          lambda m: m["evaluation"]["chat"]["by_policy"]["ppo"]["follow_up_with_history"]),
    Claim("chat_without_history", "chat (PPO): follow-ups answered right, without it (chance + 0.1)",
          CHANCE + 0.1, "<=", lambda m: m["evaluation"]["chat"]["by_policy"]["ppo"]["follow_up_without_history"]),
)


def claim_values(metrics: dict) -> dict:
    """{claim key: its number in one seed's metrics}; None where the run lacks what it needs (e.g. --no-icl)."""
    values = {}
    for claim in CLAIMS:
        try:
            values[claim.key] = float(claim.value(metrics))
        except (KeyError, ValueError, TypeError, ZeroDivisionError):
            values[claim.key] = None
    return values


def meets(value: float, claim: Claim, slack: float = 0.0) -> bool:
    """Does `value` meet the claim's target (missing it by at most `slack`)?"""
    return value >= claim.target - slack if claim.direction == ">=" else value <= claim.target + slack


def aggregate(per_seed: dict) -> dict:
    """The claims over seeds: per-seed values, mean, min, max, std, and met (the mean meets the target and no
    seed misses it by more than TOLERANCE). per_seed: {seed: that seed's metrics}."""
    claims = {}
    for claim in CLAIMS:
        values = {str(seed): claim_values(m)[claim.key] for seed, m in per_seed.items()}
        known = [v for v in values.values() if v is not None]
        row = {"claim": claim.text, "target": claim.target, "direction": claim.direction, "values": values,
               "mean": None, "min": None, "max": None, "std": None, "met": False}
        if known and len(known) == len(values):
            row.update(mean=statistics.fmean(known), min=min(known), max=max(known),
                       std=statistics.pstdev(known) if len(known) > 1 else 0.0)
            row["met"] = meets(row["mean"], claim) and all(meets(v, claim, TOLERANCE) for v in known)
        claims[claim.key] = row
    first = next(iter(per_seed.values()), {})
    return {"preset": first.get("preset"), "seeds": [int(s) for s in per_seed], "claims": claims,
            "wall_seconds": {str(s): sum(m.get("wall_seconds", {}).values()) for s, m in per_seed.items()},
            "threads": {str(s): m.get("threads") for s, m in per_seed.items()},   # wall time depends on them
            "peak_rss_mb": max((max(m.get("peak_rss_mb", {}).values(), default=0.0) for m in per_seed.values()),
                               default=0.0)}


def claims_table(aggregated: dict) -> str:
    """The claims over seeds as a Markdown table: target, mean, spread, per-seed values, met / not met (one seed:
    its value and met / not met)."""
    seeds = [str(s) for s in aggregated["seeds"]]
    sign = {">=": "≥", "<=": "≤"}
    rows, header = [], ["claim", "target", f"seed {seeds[0]}", ""]
    if len(seeds) > 1:
        header = ["claim", "target", "mean", "spread (min – max)", f"seeds {' / '.join(seeds)}", ""]
    for row in aggregated["claims"].values():
        verdict = "met" if row["met"] else "**not met**"
        target = f"{sign[row['direction']]} {row['target']:.3f}"
        if len(seeds) == 1:
            rows.append([row["claim"], target, row["values"][seeds[0]], verdict])
            continue
        spread = "–" if row["min"] is None else f"{row['min']:.3f} – {row['max']:.3f} (std {row['std']:.3f})"
        rows.append([row["claim"], target, row["mean"], spread,
                     " / ".join(_fmt(row["values"][s]) for s in seeds), verdict])
    return _table(header, rows)


def write_seeds_report(folder: Path, aggregated: dict) -> Path:
    """report.md above the seed-S/ folders: the claims table, wall time per seed, links to each seed's report."""
    seeds = aggregated["seeds"]
    out = [f"# minirlhf — preset `{aggregated.get('preset')}`, seeds {', '.join(map(str, seeds))}", "",
           f"A claim is met when the mean over seeds meets its target and no seed misses it by more than {TOLERANCE}.",
           "", claims_table(aggregated), "",
           _table(["seed", "wall time (s)", "torch threads", "report"],
                  [[s, aggregated["wall_seconds"][str(s)], aggregated.get("threads", {}).get(str(s)),
                    f"[seed-{s}/report.md](seed-{s}/report.md)"] for s in seeds]),
           "", f"Peak RSS: {aggregated['peak_rss_mb']:.0f} MB.", ""]
    return write_text_atomic(Path(folder) / "report.md", "\n".join(out))


# ----------------------------------------------------------------------------------------------------------
# One seed's report card


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
    if (run / "ppo" / "metadata.json").exists():
        save(plots.plot_ppo_history(read_metadata(run / "ppo")["history"]), "ppo_history.png")
    if (run / "evaluation.json").exists():
        evaluation = json.loads((run / "evaluation.json").read_text())
        save(plots.plot_policy_bars(evaluation["policies"]), "policies.png")
        save(plots.plot_alignment_tax(evaluation["policies"]), "alignment_tax.png")
    if (run / "overoptimisation.json").exists():
        save(plots.plot_overoptimisation(json.loads((run / "overoptimisation.json").read_text())), "frontier.png")
    return names


def _stage_sections(metrics: dict) -> list[str]:
    """Pre-training, SFT, comparisons and reward models: one table each."""
    out = []
    pre = metrics.get("pretrained", {})
    if pre:
        out += ["## Pre-training (L1)", "",
                _table(["parameters", "val loss (nats/token)", "entropy floor", "val ÷ floor", "tokens/s"],
                       [[pre.get("parameters"), pre.get("val_loss"), pre.get("entropy_floor"),
                         pre.get("val_over_floor"), pre.get("tokens_per_s")]]), ""]
        for key, what in (("icl", "Task learning (made-up mapping)"), ("icl_task", "Task recognition (true facts)")):
            if key in pre:
                out += [f"{what}, accuracy vs shots: " + ", ".join(
                    f"{k}: {a:.2f}" for k, a in zip(pre[key]["shots"], pre[key]["accuracy"])), ""]
    sft = metrics.get("sft", {})
    if sft:
        out += ["## Step 1 — SFT", "", _table(["demonstrations", "selected epoch", "val loss", "val gold"],
                                                [[sft.get("demonstrations"), sft.get("best_epoch"), sft.get("val_loss"),
                                                  sft.get("val_gold")]]), ""]
    rounds = [(n, metrics[n]) for n in ("comparisons_round1", "comparisons_round2") if n in metrics]
    if rounds:
        out += ["## Comparisons, in two rounds", "",
                _table(["round", "sampled from", "comparisons", "right vs wrong fact (share of fact prompts)"],
                       [[n[-1], ", ".join(c["policies"]), c["comparisons"], c["fact_contrast"]] for n, c in rounds]),
                ""]
    rms = [(n, metrics[n]) for n in ("rm_round1", "rm") if n in metrics]
    if rms:
        probes = list(rms[-1][1].get("probes", {}))
        out += ["## Step 2 — reward models", "",
                _table(["RM", "trained on", "val accuracy", "ceiling", "accuracy ÷ ceiling", "vs gold order", *probes],
                       [[n, f"{r['train_comparisons']} comparisons", r["val_accuracy"], r["ceiling"],
                         r["val_accuracy"] / r["ceiling"], r["val_gold_accuracy"],
                         *(r["probes"].get(p) for p in probes)] for n, r in rms]), ""]
    return out


def report_markdown(metrics: dict, evaluation: dict | None, over: dict | None, figures: list[str]) -> str:
    """The report card as Markdown."""
    out = [f"# minirlhf report card — preset `{metrics.get('preset')}`, seed {metrics.get('seed')}", ""]
    if metrics.get("claims"):
        out += ["## The lecture's claims", "", claims_table(aggregate({metrics.get("seed", 0): metrics})), ""]
    out += _stage_sections(metrics)
    if evaluation:
        rows = [[POLICY_NAMES.get(n, n), r["gold"], r["helpful"], r["honest"], r["harmless"], r["well_formed"],
                 r["win_rate_vs_sft"], r["kl_to_sft"], r["rm_reward"], r["pretrain_val_loss"]]
                for n, r in evaluation["policies"].items()]
        out += ["## Step 3 — PPO, PPO-ptx, and evaluation on held-out test prompts", "",
                _table(["policy", "gold", "helpful", "honest", "harmless", "well-formed", "win rate vs SFT",
                        "KL to SFT (nats)", "RM reward", "pre-train loss"], rows), ""]
    if over:
        out += ["## Over-optimisation (Gao et al. 2022)", "",
                f"Best-of-n on SFT ({over['prompts']} val prompts, {over['samples']} answers each, KL = log n − "
                "(n−1)/n): gold of each reward model's favourite.", "",
                _table(["n", "KL", *(f"gold, {rm}" for rm in over["best_of_n"])],
                       [[c["n"], c["kl"], *(curve[i]["gold"] for curve in over["best_of_n"].values())]
                        for i, c in enumerate(next(iter(over["best_of_n"].values())))]), "",
                "Fits of gold − SFT's gold against d = √KL: best-of-n d(α − βd), RL (PPO at β = 0) d(α − β log d).", "",
                _table(["form", "RM", "α", "β"], [[form, rm, f["alpha"], f["beta"]]
                                                  for form, fits in over["fits"].items() for rm, f in fits.items()]), ""]
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
    over = json.loads((run / "overoptimisation.json").read_text()) if (run / "overoptimisation.json").exists() else None
    figures = write_figures(run, metrics)
    return write_text_atomic(run / "report.md", report_markdown(metrics, evaluation, over, figures))


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


def _claims_lines(metrics: dict, seeds: dict | None) -> list[str]:
    """The claims table: over seeds when the run had several (seeds.json), else this seed's values."""
    if seeds is not None:
        return [f"The lecture's claims over seeds {', '.join(map(str, seeds['seeds']))} (met: the mean meets the target "
                f"and no seed misses it by more than {TOLERANCE}):", "", claims_table(seeds)]
    one = aggregate({metrics.get("seed", 0): metrics})
    return [f"The lecture's claims, seed {metrics.get('seed', 0)} only:", "", claims_table(one)]


def _results_bullets(metrics: dict, ptx_coef: float) -> list[str]:
    """One bullet per stage, every number read from metrics.json (one line each: readme_results wraps them)."""
    pre, sft, rm = metrics["pretrained"], metrics["sft"], metrics["rm"]
    pol, beta = metrics["evaluation"]["policies"], metrics["ppo"]["beta"]
    zero_shot = ", ".join(f"{_pct(a)} ({attr})" for attr, a in pre["zero_shot"].items())
    probe_name = {"wrong_fact": "wrong fact", "off_topic": "off-topic"}
    probes = ", ".join(f"{probe_name.get(k, k)} {v:.2f}" for k, v in rm["probes"].items())
    blind = min(rm["probes"], key=rm["probes"].get)
    task = (f"; task recognition (true facts, which attribute?): {_slashed(pre['icl_task']['accuracy'], 2)}"
            if "icl_task" in pre else "")
    bullets = [
        f"- **Pre-training**: validation loss {pre['val_loss']:.3f} nats/token against the corpus's entropy floor "
        f"of {pre['entropy_floor']:.3f} (ratio {pre['val_loss'] / pre['entropy_floor']:.2f}); zero-shot facts "
        f"{zero_shot} against a chance of {100 * CHANCE:.1f} %. In-context learning, "
        f"{_slashed(map(str, pre['icl']['shots']))} shots: task learning (a made-up mapping) "
        f"{_slashed(pre['icl']['accuracy'], 2)}{task}.",
        f"- **SFT** ({sft['demonstrations']} demonstrations, epoch {sft['best_epoch']} selected by its validation "
        f"gold score, {sft['val_gold']:.3f}): wins {_pct(1 - pol['pretrained']['win_rate_vs_sft'])} of the "
        "comparisons against the prompted pre-trained model.",
    ]
    rounds = [metrics[n] for n in ("comparisons_round1", "comparisons_round2") if n in metrics]
    if rounds:
        bullets.append("- **Comparisons**: " + "; ".join(
            f"round {i + 1}, {c['comparisons']} from {', '.join(c['policies'])} (right vs wrong fact in "
            f"{_pct(c['fact_contrast'])} of the fact prompts)" for i, c in enumerate(rounds)) + ".")
    rm1 = (f" (RM-1, round 1 only: {metrics['rm_round1']['val_accuracy'] / metrics['rm_round1']['ceiling']:.0%} of "
           "the ceiling)" if "rm_round1" in metrics else "")
    bullets += [
        f"- **Reward model**: {rm['val_accuracy']:.3f} pairwise accuracy against the noisy labels, "
        f"{_pct(rm['val_accuracy'] / rm['ceiling'])} of the labelers' ceiling ({rm['ceiling']:.3f}){rm1}, "
        f"{rm['val_gold_accuracy']:.3f} against the gold order; probes: {probes}. Its blind spot: "
        f"**{probe_name.get(blind, blind)}**.",
        f"- **PPO** (β = {beta:g}) takes the RM's reward on test prompts from {_signed(pol['sft']['rm_reward'])} "
        f"(SFT) to {_signed(pol['ppo']['rm_reward'])} and the gold score from {pol['sft']['gold']:.3f} to "
        f"{pol['ppo']['gold']:.3f}; it wins {_pct(pol['ppo']['win_rate_vs_sft'])} against SFT at a KL of "
        f"{pol['ppo']['kl_to_sft']:.2f} nats. **PPO-ptx** (γ = {ptx_coef:g}) wins "
        f"{_pct(pol['ppo_ptx']['win_rate_vs_sft'])} against SFT at a KL of {pol['ppo_ptx']['kl_to_sft']:.2f} nats, "
        f"with a pre-training loss of {pol['ppo_ptx']['pretrain_val_loss']:.3f} (PPO: "
        f"{pol['ppo']['pretrain_val_loss']:.3f}, SFT: {pol['sft']['pretrain_val_loss']:.3f}, pre-trained: "
        f"{pol['pretrained']['pretrain_val_loss']:.3f}).",
    ]
    over = metrics.get("overoptimisation")
    if over:
        bon = over["best_of_n"]
        rl = "; ".join(f"RL against {rm}: α = {f['alpha']:.3f}, β = {f['beta']:.3f}" for rm, f in over["fits"]["rl"].items())
        bullets.append(
            f"- **Over-optimisation**: best-of-n on SFT, n = {_slashed(str(c['n']) for c in bon['rm'])}: gold "
            + "; ".join(f"with {rm} {_slashed(c['gold'] for c in curve)}" for rm, curve in bon.items())
            + f". Gao et al.'s fits of gold − SFT's gold vs d = √KL: {rl}.")
    seconds = ", ".join(f"{stage} {t:.0f} s" for stage, t in metrics["wall_seconds"].items())
    threads = metrics.get("threads")
    on = f" ({threads} torch thread{'s' * (threads != 1)})" if threads else ""   # "1–2": a resume changed them
    bullets.append(f"- **Wall time** of this run{on}: {seconds}; peak RSS "
                   f"{max(metrics['peak_rss_mb'].values()):.0f} MB (both depend on the machine and on what else it "
                   "was running).")
    return bullets


def readme_results(metrics: dict, ptx_coef: float, seeds: dict | None = None) -> str:
    """README's results section, markers included, rendered from a course run's metrics.json (and, for a run of
    several seeds, their aggregate: seeds.json).

    ptx_coef (γ of PPO-ptx): `shipped_results` reads it from the ppo_ptx checkpoint.
    """
    bullets = [textwrap.fill(b, width=116, subsequent_indent="  ", break_on_hyphens=False)
               for b in _results_bullets(metrics, ptx_coef)]
    return "\n".join([README_BEGIN, "<!-- generated from data/run/metrics.json and seeds.json by "
                      "`python -m minirlhf.report`: do not edit by hand -->", "", *_claims_lines(metrics, seeds), "",
                      f"Seed {metrics.get('seed', 0)}, policy by policy:", "", *_results_table(metrics, ptx_coef), "",
                      *bullets, README_END])


def shipped_results(data: Path = DATA) -> str:
    """readme_results of the course run shipped under data/ (seed 0's metrics.json, the seeds' seeds.json if
    shipped, and the PPO-ptx checkpoint)."""
    run, ptx = Path(data) / "run", Path(data) / "checkpoints" / "ppo_ptx"
    if not (run / "metrics.json").exists() or not (ptx / "metadata.json").exists():
        raise FileNotFoundError(f"{run / 'metrics.json'} or {ptx} is missing: ship a finished run first "
                                "(python -m minirlhf ship runs/course)")
    seeds = json.loads((run / "seeds.json").read_text()) if (run / "seeds.json").exists() else None
    return readme_results(json.loads((run / "metrics.json").read_text()), read_metadata(ptx)["config"]["ptx_coef"],
                          seeds)


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
