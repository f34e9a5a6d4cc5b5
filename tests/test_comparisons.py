"""Comparison data: sampling K responses from several policies, JSONL round trip, loader errors, the ceiling."""

import json
import math
import random

import pytest
import torch
import torch.nn as nn

from minirlhf.comparisons import (
    MAX_CUT,
    Comparison,
    ComparisonConfig,
    ceiling_of,
    comparison_from_dict,
    cut_off_copies,
    load_comparisons,
    sample_comparisons,
    save_comparisons,
)
from minirlhf.model import GPT, get_config
from minirlhf.world import World, WorldConfig
from minirlhf.world.gold import FLAGS, NoisyRanker, gold_score


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(n_documents=50))


@pytest.fixture(scope="module")
def tok(world):
    from minirlhf.tokenizer import train_tokenizer

    texts = [p.text for p in world.prompts("train")[:200]] + [world.ideal_response(p) for p in world.prompts("train")]
    return train_tokenizer(texts, vocab_size=400)


def random_policy(tok, seed):
    torch.manual_seed(seed)
    return GPT(get_config("tiny", vocab_size=len(tok))).eval()


def eos_policy(tok):
    """A policy that always answers with EOS at once: every sample is the same empty response."""
    gpt = random_policy(tok, 99)
    gpt.lm_head = nn.Linear(gpt.config.n_embd, gpt.config.vocab_size)  # untied, logits = bias
    nn.init.zeros_(gpt.lm_head.weight)
    with torch.no_grad():
        gpt.lm_head.bias.fill_(-30.0)
        gpt.lm_head.bias[tok.eos_token_id] = 30.0
    return gpt


def ending_policy(tok):
    """A policy of random words that ends with EOS after about three of them (P(EOS) = 0.3 at every step)."""
    gpt = random_policy(tok, 98)
    gpt.lm_head = nn.Linear(gpt.config.n_embd, gpt.config.vocab_size)  # untied, logits = bias
    nn.init.zeros_(gpt.lm_head.weight)
    with torch.no_grad():
        gpt.lm_head.bias.zero_()
        gpt.lm_head.bias[tok.eos_token_id] = math.log(0.3 / 0.7 * (gpt.config.vocab_size - 1))
    return gpt


def record(**changes):
    base = {"prompt": {"id": "val-0001", "text": "what colour does bobo like ?"},
            "responses": ["bobo likes red .", "red", "ugh , red ."], "ended": [True, False, True],
            "ranking": [0, 2, 1], "gold": [1.0, 0.4, 0.6], "sources": ["sft@T=1"] * 3,
            "labeler": {"temperature": 0.08, "seed": 0}}
    base.update(changes)
    return base


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---- sampling -----------------------------------------------------------------------------------------------


def test_sample_comparisons_spreads_sources_and_ranks_by_gold(world, tok):
    prompts = [p for p in world.prompts("train") if len(p.text) < 60 and not p.history][:6]   # fit the context
    policies = {"pre": random_policy(tok, 1), "sft": random_policy(tok, 2)}
    comps = sample_comparisons(prompts, policies, tok, world, k=4, temperatures=(0.7, 1.3),
                               ranker=NoisyRanker(seed=3), seed=0, max_new_tokens=8)
    assert len(comps) == 6
    sources = [s for c in comps for s in c.sources]
    assert {s: sources.count(s) for s in set(sources)} == {"pre@T=0.7": 6, "pre@T=1.3": 6, "sft@T=0.7": 6,
                                                           "sft@T=1.3": 6}
    for c, p in zip(comps, prompts):
        assert c.k == 4 and sorted(c.ranking) == [0, 1, 2, 3]
        assert c.prompt["id"] == p.id and c.prompt_text == p.text
        assert len({(r, e) for r, e in zip(c.responses, c.ended)}) == 4  # no duplicates
        assert c.gold == [gold_score(world, p, r, e).total for r, e in zip(c.responses, c.ended)]
        assert c.labeler == {"temperature": NoisyRanker().temperature, "seed": 3, "flag_noise": 0.1}
        assert list(c.flags) == list(FLAGS) and all(len(marks) == c.k for marks in c.flags.values())
    again = sample_comparisons(prompts, policies, tok, world, k=4, temperatures=(0.7, 1.3),
                               ranker=NoisyRanker(seed=3), seed=0, max_new_tokens=8)
    assert again == comps  # seeded: reproducible


def test_the_labelers_flags_are_stored_and_checked(world, tok, tmp_path):
    """Flags mark each response's failures (hallucination: a made-up fact), as the labeler saw them."""
    prompts = world.prompts("train")[:6]
    comps = sample_comparisons(prompts, {"pre": random_policy(tok, 1)}, tok, world, k=4, temperatures=(1.0,),
                               ranker=NoisyRanker(seed=0, flag_noise=0.0), seed=0, max_new_tokens=8)
    for c, p in zip(comps, prompts):   # a noise-free labeler flags exactly the dishonest answers
        assert c.flags == {"hallucination": [int(gold_score(world, p, r, e).honest < 1)
                                             for r, e in zip(c.responses, c.ended)]}
    save_comparisons(tmp_path / "c.jsonl", comps)
    assert load_comparisons(tmp_path / "c.jsonl") == comps
    assert comparison_from_dict(record()).flags == {}   # files from before the labeler flagged anything
    for flags, message in (([0, 1, 0], "'flags' must be an object"),
                           ({"hallucination": [0, 1]}, "has 2 entries but there are K=3"),
                           ({"hallucination": [0, 2, 0]}, "list of 0/1 marks"),
                           ({"hallucination": [True, False, False]}, "list of 0/1 marks")):
        with pytest.raises(ValueError, match=message):
            comparison_from_dict(record(flags=flags))


def test_a_cut_off_copy_is_an_ended_answer_cut_short_without_eos(tok):
    texts = ["bobo likes red . bobo eats figs .", "kiki lives in a cave", "bobo likes red ."]
    ended, sources = [True, False, True], ["sft@T=1", "pre@T=1", "pre@T=0.7"]
    for seed in range(20):
        got = cut_off_copies(texts, ended, sources, tok, 1, random.Random(seed))
        assert got[0][:3] == texts and got[1][:3] == ended and got[2][:3] == sources   # the sampled ones untouched
        (cut,), (cut_ended,), (source,) = got[0][3:], got[1][3:], got[2][3:]
        j = sources.index(source.removesuffix("+cut"))
        full, part = tok.encode(texts[j], add_special_tokens=False), tok.encode(cut, add_special_tokens=False)
        assert ended[j] and not cut_ended and 0 <= len(full) - len(part) <= MAX_CUT and full[:len(part)] == part
    assert len(cut_off_copies(texts, ended, sources, tok, 3, random.Random(0))[0]) == 5   # two ended answers only
    assert cut_off_copies(["a ."], [False], ["s"], tok, 1, random.Random(0)) == (["a ."], [False], ["s"])
    with pytest.raises(ValueError, match="cut_copies=4: k \\+ cut_copies responses are ranked, at most 9"):
        ComparisonConfig(k=6, cut_copies=4)


def test_sample_comparisons_ranks_the_cut_off_copies_with_the_rest(world, tok):
    prompts = world.prompts("train")[:8]
    policies = {"pre": random_policy(tok, 1), "sft": ending_policy(tok)}
    plain = sample_comparisons(prompts, policies, tok, world, k=4, seed=0, max_new_tokens=8)
    cut = sample_comparisons(prompts, policies, tok, world, k=4, seed=0, max_new_tokens=8, cut_copies=1)
    assert len(cut) == len(plain) and any(c.k == 5 for c in cut)
    for prompt, a, b in zip(prompts, plain, cut):
        assert b.responses[:a.k] == a.responses and b.gold[:a.k] == a.gold   # the same samples, one copy more
        for r, e, g, s in zip(b.responses[a.k:], b.ended[a.k:], b.gold[a.k:], b.sources[a.k:]):
            assert not e and s.endswith("+cut") and g == gold_score(world, prompt, r, e).total
        assert sorted(b.ranking) == list(range(b.k))
    with pytest.raises(ValueError, match="cut_copies=6"):
        sample_comparisons(prompts, policies, tok, world, k=4, cut_copies=6)


def test_duplicates_are_resampled_then_dropped(world, tok):
    prompts = world.prompts("train")[:3]
    policies = {"eos": eos_policy(tok), "rand": random_policy(tok, 5)}
    comps = sample_comparisons(prompts, policies, tok, world, k=4, temperatures=(1.0,), max_new_tokens=6)
    for c in comps:  # two of four slots from the EOS policy: both "" -> one kept
        assert c.k == 3
        assert c.responses.count("") == 1 and sorted(c.ranking) == [0, 1, 2]
    only_eos = sample_comparisons(prompts, {"eos": eos_policy(tok)}, tok, world, k=4, temperatures=(1.0,),
                                  max_new_tokens=6)
    assert only_eos == []  # a prompt with one distinct response has no pair to compare


@pytest.mark.parametrize("k", [1, 3, 10, 4.0])
def test_k_must_be_between_4_and_9(world, tok, k):
    with pytest.raises(ValueError, match="between 4 and 9"):
        sample_comparisons(world.prompts("train")[:1], {"p": random_policy(tok, 0)}, tok, world, k=k)


# ---- JSONL round trip and validation ----------------------------------------------------------------------------


def test_round_trip(tmp_path):
    comps = [Comparison(**record()), Comparison(**record(responses=["a", "b", "c"]))]
    path = save_comparisons(tmp_path / "sub" / "comparisons.jsonl", comps)
    assert load_comparisons(path) == comps
    assert [p.name for p in path.parent.iterdir()] == ["comparisons.jsonl"]  # no temp file left behind
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["ranking"] == [0, 2, 1]


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({k: v for k, v in record().items() if k != "gold"}), r"missing field\(s\) \['gold'\]"),
    (json.dumps(record(responses=["only one"], ended=[True], ranking=[0], gold=[1.0], sources=["s"])),
     "K=1 responses; a comparison needs at least 2"),
    (json.dumps(record(ranking=[0, 0, 1])), r"not a permutation of range\(3\)"),
    (json.dumps(record(ranking=[1, 2, 3])), r"not a permutation of range\(3\)"),
    (json.dumps(record(ranking=[0, 1])), "'ranking' has 2 entries but there are K=3"),
    (json.dumps(record(ended=[True, "no", True])), "'ended' must be a list of true/false"),
    (json.dumps(record(gold=[1.0, None, 0.5])), "'gold' must be a list of numbers"),
    (json.dumps(record(responses=["a", "b", "a"], ended=[True, False, True])), "responses 0 and 2 are identical"),
    (json.dumps(record(prompt="what?")), "'prompt' must be an object"),
], ids=["json", "not-object", "missing", "k1", "repeat-index", "bad-index", "short-ranking", "ended-type",
        "gold-type", "duplicate", "prompt-type"])
def test_malformed_records_name_file_and_line(tmp_path, bad_line, message):
    good = json.dumps(record())
    path = write_lines(tmp_path / "c.jsonl", [good, good, "", good, good, good, bad_line, good])
    with pytest.raises(ValueError, match=message) as info:
        load_comparisons(path)
    assert f"{path} line 7:" in str(info.value)


def test_same_text_with_and_without_eos_is_not_a_duplicate(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(record(responses=["a", "a", "b"], ended=[True, False, True]))])
    assert load_comparisons(path)[0].k == 3


def test_empty_file(tmp_path):
    for text in ["", "\n\n"]:
        path = tmp_path / "empty.jsonl"
        path.write_text(text)
        with pytest.raises(ValueError, match=f"no comparisons in {path}"):
            load_comparisons(path)


# ---- the labelers' agreement ceiling ---------------------------------------------------------------------------


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_ceiling_by_hand():
    # record A, K=2, T=0.5: one pair, Δ = 0.5 -> σ(1)
    a = Comparison(**record(responses=["x", "y"], ended=[True, True], ranking=[0, 1], gold=[1.0, 0.5],
                            sources=["s", "s"], labeler={"temperature": 0.5, "seed": 0}))
    # record B, K=3, T=1: Δ = 1, 2, 1 -> σ(1), σ(2), σ(1); pairs pooled: 4 pairs in all
    b = Comparison(**record(gold=[2.0, 1.0, 0.0], labeler={"temperature": 1.0, "seed": 0}))
    assert ceiling_of([a]) == pytest.approx(sigmoid(1.0))
    assert ceiling_of([a, b]) == pytest.approx((3 * sigmoid(1.0) + sigmoid(2.0)) / 4)
    ties = Comparison(**record(gold=[0.5, 0.5, 0.5]))
    assert ceiling_of([ties]) == pytest.approx(0.5)  # ties: a coin flip, nobody can beat it
    with pytest.raises(ValueError, match="no comparisons"):
        ceiling_of([])
