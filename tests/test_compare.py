"""The method comparison: the gold labeler as a reward model, matched budgets, and a tiny end-to-end comparison."""

import json
import sys

import pytest
import torch
from tiny_rl import single_thread, tiny_setup

from minirlhf.checkpoint import save_checkpoint
from minirlhf.compare import (
    METHODS,
    CompareConfig,
    GoldReward,
    PeakMemory,
    best_under_kl,
    config_from_args,
    draw,
    gold_ranked,
    methods_table,
    quick_config,
    run_compare,
)
from minirlhf.comparisons import Comparison, sample_comparisons, save_comparisons
from minirlhf.reward import RewardModel
from minirlhf.tokenizer import encode_chat_prompt
from minirlhf.world.gold import gold_score


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tiny(one_thread):
    return tiny_setup()


def test_gold_reward_scores_each_answer_with_the_gold_labeler(tiny):
    world, tokenizer, sft, prompts, gold = tiny
    asked = prompts[:6]                                  # prompts of different lengths: left padding
    out = sft.generate([encode_chat_prompt(tokenizer, p) for p in asked], 16, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, generator=torch.Generator().manual_seed(0))
    expected = [gold_score(world, p, tokenizer.decode(ids, skip_special_tokens=True).strip(), bool(e)).total
                for p, ids, e in zip(asked, out.response_ids, out.ended.tolist())]
    got = gold(out.sequences, attention_mask=out.attention_mask)
    assert got.tolist() == pytest.approx(expected) and len(set(expected)) > 1
    with pytest.raises(ValueError, match="none of its prompts"):
        GoldReward(world, prompts[6:7], tokenizer, sft.config)(out.sequences[:1], out.attention_mask[:1])


def test_gold_ranked_sorts_by_the_gold_scores():
    c = Comparison(prompt={"text": "hi"}, responses=["a", "b", "c"], ended=[True] * 3, ranking=[0, 1, 2],
                   gold=[0.2, 0.9, 0.5])
    assert gold_ranked([c])[0].ranking == [1, 2, 0] and c.ranking == [0, 1, 2]


def test_draw_takes_every_item_once_before_repeating():
    got = draw(list("abcde"), 12, seed=0)
    assert len(got) == 12 and sorted(got[:5]) == list("abcde") and sorted(got[5:10]) == list("abcde")
    assert draw(list("abcde"), 12, seed=0) == got and draw(list("abcde"), 3, seed=1) != draw(list("abcde"), 3, seed=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident-set high-water mark is Linux's")
def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu")) as memory:
        x = torch.ones(64 * 2**20 // 4)   # 64 MiB, touched
        del x
    assert memory.extra_mb > 48 and memory.peak_mb >= memory.extra_mb and memory.kind == "resident set"


def test_configs_match_the_budgets_or_say_why_not():
    cfg = CompareConfig()
    assert cfg.budget == {"samples": 1024, "gradient_steps": 256, "dpo_comparisons": 2048}
    with pytest.raises(ValueError, match="unknown method"):
        CompareConfig(methods=("ppo", "sft"))
    with pytest.raises(ValueError, match="β > 0"):
        CompareConfig(betas=(0.0, 0.1))
    with pytest.raises(ValueError, match="n >= 1"):
        CompareConfig(ns=(0,))
    with pytest.raises(ValueError, match="not a multiple of ppo.batch_size"):
        CompareConfig(samples=100)
    with pytest.raises(ValueError, match="gradient steps differ"):
        CompareConfig(grpo=replace_grpo(ppo_epochs=1))
    with pytest.raises(ValueError, match="different"):
        CompareConfig(grpo=replace_grpo(max_new_tokens=16))
    with pytest.raises(ValueError, match="'rm'"):
        CompareConfig(reward="human")


def replace_grpo(**changes):
    from dataclasses import replace

    return replace(CompareConfig().grpo, **changes)


def test_the_command_line_arguments(capsys):
    from minirlhf.__main__ import build_parser, main

    def parse(*argv):
        return config_from_args(build_parser().parse_args(["compare", *argv]))

    cfg = parse("runs/x", "--quick", "--methods", "dpo,grpo", "--betas", "0.1,0.5")
    assert cfg.methods == ("dpo", "grpo") and cfg.betas == (0.1, 0.5) and cfg.samples == 64
    cfg = parse("runs/x", "--ns", "2,8", "--samples", "2048", "--reward", "gold")
    assert cfg.ns == (2, 8) and cfg.samples == 2048 and cfg.reward == "gold" and cfg.methods == METHODS
    for argv, message in ((["--betas", "0.1,0"], "--betas: 0 is out of range"), (["--ns", "2,x"], "'x' is not an integer"),
                          (["--methods", "ppo,sft"], "unknown ['sft']")):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", "runs/x", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert main(["compare", "runs/x", "--samples", "100"]) == 2   # not a multiple of the answers per rollout
    assert "not a multiple of ppo.batch_size" in capsys.readouterr().err
    assert main(["compare", "runs/nope"]) == 2
    assert "needs a finished run's SFT and RM checkpoints" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_folder(tiny, tmp_path_factory):
    """A finished run in miniature: the tiny SFT, a reward model from its trunk, and comparison files."""
    world, tokenizer, sft, prompts, gold = tiny
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder / "sft", sft, tokenizer, stage="sft")
    torch.manual_seed(0)
    save_checkpoint(folder / "rm", RewardModel.from_gpt(sft), tokenizer, stage="rm")
    for name, part in (("round1", prompts[:16]), ("round2", prompts[16:32]), ("val", prompts[32:40])):
        comparisons = sample_comparisons(part, {"sft": sft}, tokenizer, world, k=4, temperatures=(1.0,), seed=0,
                                         max_new_tokens=16)
        save_comparisons(folder / f"comparisons_{name}.jsonl", comparisons)
    return folder


def test_a_tiny_comparison_of_every_method(run_folder, tmp_path):
    cfg = quick_config(samples=32, ns=(2,), betas=(0.1,), tax_documents=40, ptx_documents=60)
    result = run_compare(run_folder, cfg, out=tmp_path, progress=False)
    assert (tmp_path / "methods.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "methods.json").read_text())["methods"].keys() == set(METHODS)
    assert result["budget"] == {"samples": 32, "gradient_steps": 8, "dpo_comparisons": 64}
    assert result["sft"]["win_rate_vs_sft"] == 0.5 and result["sft"]["kl_to_sft"] == pytest.approx(0.0, abs=1e-5)
    for method, points in result["methods"].items():
        (point,) = points
        assert point["knob"] == ("n" if method == "best_of_n" else "beta") and point["seconds"] > 0
        assert 0 <= point["gold"] <= 1 and 0 <= point["win_rate_vs_sft"] <= 1 and point["peak_memory_mb"] > 0
        assert point["kl_to_sft"] != 0, method   # every method moved away from SFT (one step: a tiny, noisy k1)
    histories = {m: p[0]["history"] for m, p in result["methods"].items()}
    for method in ("ppo", "ppo_ptx", "grpo", "rloo"):             # 32 samples: one rollout of 32 answers each
        assert len(histories[method]["kl"]) == 1, method
    assert len(histories["dpo"]["loss"]) == 8                     # as many Adam steps as the on-line methods
    assert set(best_under_kl(result, float("inf"))) == set(METHODS) and best_under_kl(result, -1.0) == {}
    assert methods_table(result).count("\n") == 2 + len(METHODS)
