"""README's results section is generated from the shipped run's metrics.json, and still matches it (seconds)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from minirlhf import report

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
METRICS = json.loads((ROOT / "data" / "run" / "metrics.json").read_text())


def test_readme_results_are_the_rendered_metrics():
    """If this fails after shipping a new run: python -m minirlhf.report (it rewrites the section)."""
    assert report.readme_section(README.read_text()) == report.shipped_results()


def test_the_table_reads_each_policy_from_metrics():
    """An independent look at the table: every cell is its metrics.json value at the printed precision."""
    lines = report.readme_section(README.read_text()).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| policy |"))
    rows = [line for line in lines[start + 2:] if line.startswith("| ")]
    policies = METRICS["evaluation"]["policies"]
    assert len(rows) == len(policies)
    for line, (name, r) in zip(rows, policies.items()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0].startswith(report.POLICY_NAMES[name])
        for cell, key in zip(cells[1:7], ("gold", "helpful", "honest", "harmless", "well_formed", "win_rate_vs_sft")):
            assert float(cell) == pytest.approx(r[key], abs=5e-4), (name, key)
        assert float(cells[7]) == pytest.approx(r["kl_to_sft"], abs=5e-3), (name, "kl_to_sft")
        assert float(cells[8]) == pytest.approx(r["pretrain_val_loss"], abs=5e-4), (name, "pretrain_val_loss")


def test_the_pretraining_figures_match_metrics():
    section = report.readme_section(README.read_text())
    pre = METRICS["pretrained"]
    assert f"validation loss {pre['val_loss']:.3f} nats/token" in section
    assert f"entropy floor of {pre['entropy_floor']:.3f}" in section
    assert "/".join(f"{a:.2f}" for a in pre["icl"]["accuracy"]) in section


def test_the_claims_table_reads_the_seeds_aggregate_when_there_is_one():
    one = report.readme_results(METRICS, 1.0)
    assert "seed 0 only" in one and "| mean |" not in one
    seeds = report.aggregate({0: METRICS, 1: METRICS})
    section = report.readme_results(METRICS, 1.0, seeds)
    assert "over seeds 0, 1" in section and "| mean |" in section and "seeds 0 / 1" in section
    for claim in report.CLAIMS:
        assert claim.text in section


def test_update_readme_rewrites_only_the_section(tmp_path):
    readme = tmp_path / "README.md"
    stale = f"# title\n\nbefore\n\n{report.README_BEGIN}\nold numbers\n{report.README_END}\n\nafter\n"
    readme.write_text(stale)
    assert report.update_readme(readme, ROOT / "data") is True
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert report.readme_section(text) == report.shipped_results()
    assert report.update_readme(readme, ROOT / "data") is False  # a second run changes nothing


def test_missing_markers_and_missing_run_are_refused(tmp_path):
    with pytest.raises(ValueError, match="results:begin"):
        report.readme_section("no markers here")
    with pytest.raises(ValueError, match="comes before"):
        report.readme_section(f"{report.README_END}\n{report.README_BEGIN}")
    (tmp_path / "run").mkdir()
    shutil.copyfile(ROOT / "data" / "run" / "metrics.json", tmp_path / "run" / "metrics.json")
    with pytest.raises(FileNotFoundError, match="ship a finished run"):
        report.shipped_results(tmp_path)  # no checkpoints/ppo_ptx


def test_readme_quotes_no_test_counts():
    """Counts go stale with every new test; pytest prints them."""
    assert not re.search(r"\b\d+ (unit )?tests\b|\b\d+ cells\b", README.read_text())
