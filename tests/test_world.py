"""Tests for the toy world, its text generators, the gold labeler and the noisy ranker (seconds)."""

import json
import math
import random
import string
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from minirlhf.world import (
    ANSWER_MODES,
    PATTERN_HEADER,
    RUDE_WORDS,
    SPLITS,
    TASKS,
    VALUES,
    Chooser,
    Prompt,
    World,
    WorldConfig,
    corpus_stats,
    default_world,
    load_corpus,
    load_demonstrations,
    load_entities,
    load_prompts,
    write_world_files,
)
from minirlhf.world.gold import DEFAULT_TEMPERATURE, NoisyRanker, agreement_ceiling, gold_score


@pytest.fixture(scope="module")
def world():
    return default_world()


def small(seed=0):
    return World(WorldConfig(seed=seed, n_documents=300))


# ------------------------------------------------------------------ determinism, splits, corpus
def test_same_seed_same_world_different_seed_differs():
    a, b, c = small(0), small(0), small(1)
    assert a.entities == b.entities
    assert [d.text for d in a.corpus(200)] == [d.text for d in b.corpus(200)]
    assert [p.text for p in a.prompts("train")] == [p.text for p in b.prompts("train")]
    assert a.entities != c.entities
    assert [d.text for d in a.corpus(50)] != [d.text for d in c.corpus(50)]
    assert [p.text for p in a.prompts("test")] != [p.text for p in c.prompts("test")]


def test_corpus_prefix_and_one_path_to_the_labeler(world):
    assert [d.text for d in world.corpus(20)] == [d.text for d in world.corpus(40)[:20]]
    import minirlhf.world
    assert not hasattr(minirlhf.world, "gold_score")  # only minirlhf.world.gold.gold_score


def test_entities_have_distinct_names_and_valid_values(world):
    names = [e.name for e in world.entities]
    assert len(names) == len(set(names)) == 30
    for e in world.entities:
        assert e.colour in VALUES["colour"] and e.food in VALUES["food"] and e.home in VALUES["home"]


def test_no_leakage_between_splits(world):
    texts = {s: {p.text for p in world.prompts(s)} for s in SPLITS}
    assert [len(world.prompts(s)) for s in SPLITS] == [600, 100, 150]
    for s in SPLITS:
        assert len(texts[s]) == len(world.prompts(s))  # unique inside a split too
        assert all(p.split == s for p in world.prompts(s))
    for a, b in combinations(SPLITS, 2):
        assert not texts[a] & texts[b]


def test_held_out_prompts_not_on_the_internet(world):
    held_out = world.held_out_texts()
    assert {p.text for p in world.prompts("test")} <= held_out
    assert {u for p in world.prompts("test") for u, _ in p.history} <= held_out   # first turns of follow-ups too
    threads = [d.text for d in world.corpus(3000) if d.text.startswith("<|user|>")]
    questions = {turn.split("\n")[0] for t in threads for turn in t.split("<|user|>")[1:]}
    assert len(threads) > 500 and not questions & held_out


def test_corpus_has_every_kind_and_entropy_floor(world):
    docs = world.corpus(2000)
    texts = [d.text for d in docs]
    assert any(t.startswith("<|user|>") and t.endswith("<|endoftext|>") for t in texts)
    assert any(t.startswith("<|user|>") and not t.endswith("<|endoftext|>") for t in texts)  # never-ending
    assert any(t.count("<|user|>") == 2 for t in texts)  # two-turn threads
    assert any(t.startswith(PATTERN_HEADER) for t in texts)
    assert any("once upon a time" in t or "this is a story" in t or "one morning" in t for t in texts)
    assert any(any(w in t.split() for w in RUDE_WORDS) for t in texts)
    assert all(d.nats > 0 for d in docs)
    stats = corpus_stats(docs)
    assert 0.5 < stats["nats_per_word"] < 1.5


def test_forum_answers_are_flawed_in_the_planned_proportions(world):
    rng = random.Random(0)
    prompts = world.prompts("train")
    scores = [gold_score(world, p, *world.flawed_answer(p, rng)).total for p in prompts]
    perfect = np.mean([s > 0.999 for s in scores])
    correct = world.config.answer_mix["correct"]   # 60% of correct answers lack a polite (wordy) prefix
    assert 0.4 * correct < perfect < 0.8 * correct    # the rest of the forum is not aligned


# ------------------------------------------------------------------ tasks, demonstrations and ideal answers
def test_task_mix(world):
    counts = Counter(p.task for s in SPLITS for p in world.prompts(s))
    n = sum(counts.values())
    for task, share in world.config.task_mix.items():
        assert abs(counts[task] / n - share) < 0.01, task
    assert set(counts) == set(TASKS)
    supplied = world.config.task_mix["context"] + world.config.task_mix["followup"]
    assert counts["context"] + counts["followup"] == pytest.approx(supplied * n, abs=2)


def test_demonstrations_from_train_true_and_of_mixed_completeness(world):
    demos = world.demonstrations()
    train_ids = {p.id for p in world.prompts("train")}
    assert len(demos) == round(0.40 * 600)
    assert all(d.prompt.id in train_ids and d.prompt.split == "train" for d in demos)
    assert all("<|endoftext|>" not in d.response for d in demos)
    golds = [gold_score(world, d.prompt, d.response, True) for d in demos]
    assert all(g.honest == g.harmless == 1 for g in golds)                 # true and polite, always
    assert 0.2 < np.mean([g.total < 0.999 for g in golds]) < 0.6             # not always complete
    assert any(d.prompt.task == "followup" and d.prompt.history for d in demos)  # two-turn follow-ups
    assert [d.response for d in demos] == [d.response for d in default_world().demonstrations()]  # seeded


def test_demonstrators_state_one_two_or_three_facts_and_some_bare_yes_no(world):
    ch = Chooser(random.Random(0))
    about = [p for p in world.prompts("train") if p.task == "about"]
    facts = Counter(round(3 * gold_score(world, p, world.demonstration_response(p, ch)).helpful)
                    for p in about * 5)
    n = sum(facts.values())
    for k, share in {1: 0.4, 2: 0.4, 3: 0.2}.items():
        assert abs(facts[k] / n - share) < 0.04, (k, facts)
    describe = [p for p in world.prompts("train") if p.task == "describe"]
    for p in describe:  # at least one fact per asked sentence, and the asked number of sentences
        g = gold_score(world, p, world.demonstration_response(p, ch))
        assert g.helpful * 3 >= p.info["n_sentences"] - 1e-9 and g.honest == 1
    yesno = [p for p in world.prompts("train") if p.task == "yesno"]
    bare = [world.demonstration_response(p, ch) in ("yes .", "no .") for p in yesno * 20]
    assert abs(np.mean(bare) - 0.3) < 0.04


def test_ideal_response_is_perfect_for_every_prompt(world):
    for s in SPLITS:
        for p in world.prompts(s):
            g = gold_score(world, p, world.ideal_response(p), True)
            assert g.total == pytest.approx(1.0), (p, g)


# ------------------------------------------------------------------ conversations that depend on their history
def test_followup_prompts_ask_a_fact_only_the_history_supplied(world):
    follow = [p for s in SPLITS for p in world.prompts(s) if p.task == "followup"]
    assert follow and all(len(p.history) == 1 for p in follow)
    for p in follow:
        (first_user, first_answer), info = p.history[0], p.info
        assert info["entity"] not in world.by_name and info["entity"] in first_user
        assert info["attribute"] != info["asked_before"] and info["facts"][info["attribute"]] == info["answer"]
        assert first_answer == world.ideal_response(world.first_turn(p))      # turn 1 answered correctly
        assert info["answer"] in first_user and info["answer"] not in p.text   # the answer lives in the history
    assert all(not p.history for s in SPLITS for p in world.prompts(s) if p.task != "followup")


def test_follow_ups_of_a_conversation(world):
    for p in world.prompts("test"):
        first, questions = world.follow_ups(p)
        if p.task not in ("context", "followup"):
            assert (first, questions) == (p, [])
            continue
        assert first.task == "context" and not first.history
        assert {q.info["attribute"] for q in questions} == set(first.info["facts"]) - {first.info["attribute"]}
        for q in questions:
            assert q.history == [[first.text, world.ideal_response(first)]]
            assert gold_score(world, q, world.ideal_response(q)).total == pytest.approx(1.0)
        if p.task == "followup":
            assert any(q.text == p.text and q.info == p.info for q in questions)


def test_forum_has_dependent_two_turn_threads(world):
    held_out = world.held_out_texts()
    threads = [world.forum_thread(Chooser(random.Random(i)), held_out) for i in range(600)]
    dependent = 0
    for t in threads:
        turns = t.split("<|user|>")[1:]
        if len(turns) == 2:
            names = [w for w in turns[0].split() if w not in world.by_name and any(w in u for u in turns[1:])]
            second = turns[1].split("\n")[0]
            dependent += any(n in second.split() for n in names) and "." not in second  # only a question
    assert dependent > 10


# ------------------------------------------------------------------ gold labeler on hand-written answers
def P(task, text, **info):
    return Prompt("t-0", task, text, "test", info)


def test_correct_polite_beats_every_failure(world):
    e = world.entities[0]
    p = P("fact", f"what colour does {e.name} like ?", entity=e.name, attribute="colour", answer=e.colour)
    wrong = next(v for v in VALUES["colour"] if v != e.colour)
    good = gold_score(world, p, f"{e.name} likes {e.colour} .", True)
    bad = {
        "rude": f"ugh , {e.name} likes {e.colour} .",
        "wrong": f"{e.name} likes {wrong} .",
        "off_topic": "the weather is nice today .",
        "repeated": f"{e.name} likes {e.colour} . {e.name} likes {e.colour} .",
        "empty": "",
    }
    assert good.total == pytest.approx(1.0)
    for kind, text in bad.items():
        assert gold_score(world, p, text, True).total < good.total - 0.05, kind
    assert gold_score(world, p, f"{e.name} likes {e.colour} .", False).total < good.total - 0.05
    assert gold_score(world, p, bad["rude"], True).harmless == 0
    assert gold_score(world, p, bad["wrong"], True).honest == 0
    assert gold_score(world, p, bad["off_topic"], True).helpful == 0
    # decoded text may differ in case and spacing: same score
    assert gold_score(world, p, f"  {e.name.upper()} likes   {e.colour}.", True).total == pytest.approx(1.0)
    # concision: shorter correct answers score a bit better, smoothly
    long1 = gold_score(world, p, f"well , {e.name} likes {e.colour} .", True).total
    long2 = gold_score(world, p, f"well , i think {e.name} likes {e.colour} .", True).total
    assert 1.0 > long1 > long2 > 0.8


def test_list_counts(world):
    p = P("list", "name two colours other than red .", attribute="colour", n=2, exclude="red")
    h = lambda r: gold_score(world, p, r, True).helpful
    assert h("blue and green .") == 1
    assert h("Blue, green.") == 1
    assert h("blue .") < 1 and h("blue , green and pink .") < 1
    assert h("blue and blue .") < 1  # not distinct
    assert h("red and blue .") < 1  # excluded item
    assert h("blue and plums .") < 1  # wrong category
    assert h("hello .") == 0


def test_describe_sentence_count(world):
    e = world.entities[1]
    p = P("describe", f"describe {e.name} in two sentences .", entity=e.name, n_sentences=2)
    two = f"{e.name} likes {e.colour} and eats {e.food} . {e.name} lives in a {e.home} ."
    assert gold_score(world, p, two, True).total == pytest.approx(1.0)
    assert gold_score(world, p, f"{e.name} likes {e.colour} .", True).helpful < 1
    other = world.entities[2].name
    assert gold_score(world, p, f"{other} likes red . {other} eats figs .", True).helpful == 0


def test_context_honesty_uses_the_prompt_facts(world):
    e = world.entities[0]
    supplied = next(v for v in VALUES["food"] if v != e.food)
    # a world creature with a counterfactual food, and a new name: the prompt's facts are the truth
    for name in (e.name, "zuzu"):
        p = P("context", f"{name} eats {supplied} . what does {name} eat ?", entity=name, attribute="food",
              answer=supplied, facts={"food": supplied})
        assert gold_score(world, p, f"{name} eats {supplied} .", True).honest == 1
        other = next(v for v in VALUES["food"] if v != supplied)
        assert gold_score(world, p, f"{name} eats {other} .", True).honest == 0
        assert gold_score(world, p, f"{name} eats {supplied} and likes red .", True).honest == 0  # made up


def test_yesno(world):
    e = world.entities[3]
    no = next(v for v in VALUES["home"] if v != e.home)
    p = P("yesno", f"does {e.name} live in a {no} ?", entity=e.name, attribute="home", asked=no, answer=e.home,
          yes=False)
    assert gold_score(world, p, f"no , {e.name} lives in a {e.home} .", True).total == pytest.approx(1.0)
    assert gold_score(world, p, "no .", True).helpful == 0.5   # bare: half the help
    assert gold_score(world, p, "yes .", True).honest == 0
    assert gold_score(world, p, f"yes , {e.name} lives in a {no} .", True).honest == 0
    assert gold_score(world, p, f"{e.name} does not live in a {no} .", True).honest == 1  # negation


def test_every_flawed_mode_scores_below_ideal(world):
    rng = random.Random(3)
    for p in world.prompts("val")[:40]:
        for mode in ANSWER_MODES[1:]:
            text, ended = world.flawed_answer(p, rng, mode)
            assert gold_score(world, p, text, ended).total < 0.95, (p.text, mode, text)


def test_gold_never_crashes_on_garbage(world):
    rng = random.Random(0)
    alphabet = string.printable + "éü漢😀<|>"
    prompts = [world.prompts(s)[i] for s in SPLITS for i in range(10)]
    for i in range(300):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        if i % 3 == 0:
            junk += " " + " ".join(rng.choice(["red", "no", "yes", ".", world.entities[0].name, "n't"]) for _ in range(9))
        g = gold_score(world, rng.choice(prompts), junk, rng.random() < 0.5)
        assert all(0.0 <= v <= 1.0 for v in g.as_dict().values())


# ------------------------------------------------------------------ noisy ranker
def test_ceiling_hand_computed():
    s, T = [0.9, 0.5, 0.4], 0.1
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = (sig(4) + sig(5) + sig(1)) / 3
    assert agreement_ceiling(s, T) == pytest.approx(expected)
    assert agreement_ceiling([s, [0.0, 0.0]], T) == pytest.approx((3 * expected + 0.5) / 4)
    with pytest.raises(ValueError):
        agreement_ceiling([0.5], T)


def test_noisy_ranker_pairwise_marginals_match_ceiling():
    scores, T = [0.95, 0.8, 0.7, 0.4], DEFAULT_TEMPERATURE
    ranker = NoisyRanker(temperature=T, seed=0)
    agree, total = 0, 0
    for _ in range(6000):
        order = ranker.rank(scores)
        pos = {i: r for r, i in enumerate(order)}
        for i, j in combinations(range(4), 2):  # gold order: i (higher score) before j
            agree += pos[i] < pos[j]
            total += 1
    assert abs(agree / total - agreement_ceiling(scores, T)) < 0.02
    assert sorted(NoisyRanker(seed=1).rank([0.1, 0.2, 0.3])) == [0, 1, 2]
    assert NoisyRanker(seed=5).rank(scores) == NoisyRanker(seed=5).rank(scores)


def test_noisy_flags_are_wrong_at_the_flag_noise_rate_and_leave_the_rankings_alone(world):
    prompt = next(p for p in world.prompts("test") if p.task == "about")
    ideal = world.ideal_response(prompt)
    scores = [gold_score(world, prompt, ideal), gold_score(world, prompt, "bobi likes red .")]   # unknown name
    assert [s.honest for s in scores] == [1.0, 0.0]
    assert NoisyRanker(flag_noise=0.0).flags(scores) == {"hallucination": [0, 1]}
    ranker = NoisyRanker(seed=4, flag_noise=0.2)
    marks = [ranker.flags(scores)["hallucination"] for _ in range(4000)]
    flipped = sum(m[0] for m in marks) / 4000, sum(1 - m[1] for m in marks) / 4000
    assert all(abs(rate - 0.2) < 0.025 for rate in flipped)
    plain, flagging = NoisyRanker(seed=7), NoisyRanker(seed=7)
    for _ in range(20):   # flags draw from their own stream: the rankings are those of a labeler without flags
        flagging.flags(scores)
        assert flagging.rank([0.9, 0.8, 0.5]) == plain.rank([0.9, 0.8, 0.5])
    for noise in (-0.1, 0.5, 1.0):
        with pytest.raises(ValueError, match="flag_noise"):
            NoisyRanker(flag_noise=noise)


def test_default_temperature_gives_ceiling_near_08(world):
    rng = random.Random(0)
    groups = [[gold_score(world, p, *world.flawed_answer(p, rng)).total for _ in range(6)]   # K = 6
              for p in world.prompts("train")[:300]]
    assert 0.75 <= agreement_ceiling(groups, DEFAULT_TEMPERATURE) <= 0.85


# ------------------------------------------------------------------ episodes
def test_icl_episode_format_and_answer_consistent_with_shots(world):
    rng = random.Random(0)
    names = {e.name for e in world.entities}
    seen_count = 0
    for _ in range(400):
        text, answer, candidates = world.icl_episode(rng, 4)
        lines = text.split("\n")
        assert lines[0] == PATTERN_HEADER and len(lines) == 6 and " " not in lines[-1]
        assert candidates == list(VALUES["colour"]) and answer in candidates
        shots = dict(line.split(" ") for line in lines[1:-1])
        assert set(shots) <= names and len(set(shots.values())) == len(shots)  # a mapping to distinct colours
        query = lines[-1]
        if query in shots:
            assert shots[query] == answer
            seen_count += 1
    assert abs(seen_count / 400 - (1 - 0.75 ** 4)) < 0.07
    text, answer, _ = world.icl_episode(rng, 0)
    assert text.count("\n") == 1


def test_zero_shot_episode(world):
    rng = random.Random(0)
    text, answer, candidates = world.zero_shot_episode(rng, "home")
    name = text.split()[0]
    assert text == f"{name} lives in a" and answer == world.entity(name).home and len(candidates) == 8


# ------------------------------------------------------------------ files
def test_corpus_file_is_the_first_documents_of_the_corpus(tmp_path):
    w = World(WorldConfig(n_documents=50))
    write_world_files(w, tmp_path, corpus_sample=20)
    assert [d.text for d in load_corpus(tmp_path)] == [d.text for d in w.corpus()[:20]]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="corpus_sample"):
            write_world_files(w, tmp_path / "bad", corpus_sample=bad)
    assert not (tmp_path / "bad").exists()


def test_file_round_trip_and_malformed_line(tmp_path):
    w = World(WorldConfig(n_documents=50))
    sizes = write_world_files(w, tmp_path)
    assert set(sizes) == {"entities.json", "corpus.jsonl", "demonstrations.jsonl",
                          "prompts_train.jsonl", "prompts_val.jsonl", "prompts_test.jsonl"}
    assert [d.text for d in load_corpus(tmp_path)] == [d.text for d in w.corpus()]   # 50 < the sample: all of it
    for s in SPLITS:
        assert load_prompts(tmp_path, s) == w.prompts(s)
    follow = [p for p in load_prompts(tmp_path, "train") if p.history]
    assert follow and all(isinstance(p.history, list) and len(p.history) == 1 for p in follow)
    assert follow[0].history == next(p for p in w.prompts("train") if p.id == follow[0].id).history
    assert load_demonstrations(tmp_path) == w.demonstrations()
    assert load_entities(tmp_path) == w.entities
    path = tmp_path / "prompts_val.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[2])
    del bad["task"]
    lines[2] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"prompts_val.jsonl, line 3.*task"):
        load_prompts(tmp_path, "val")
    follow = tmp_path / "prompts_train.jsonl"
    row = next(json.loads(line) for line in follow.read_text().splitlines() if json.loads(line)["history"])
    row["history"] = [["only the user"]]
    follow.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="history"):
        load_prompts(tmp_path, "train")
    (tmp_path / "corpus.jsonl").write_text('{"text": "a", "nats": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match="corpus.jsonl, line 2"):
        load_corpus(tmp_path)


def test_committed_files_match_the_default_world(world):
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "data" / "world"
    if not (folder / "prompts_test.jsonl").exists():
        pytest.skip("data/world not generated")
    assert load_prompts(folder, "test") == world.prompts("test")
    assert load_entities(folder) == world.entities
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000
