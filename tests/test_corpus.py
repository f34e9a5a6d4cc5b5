"""Tests for the pre-training corpus: document kinds, their exact nats, the phases and the fresh stream (seconds)."""

import itertools
import math
import random
from collections import Counter

import pytest

from minirlhf.world import VALUES, Chooser, World, WorldConfig
from minirlhf.world.corpus import (
    ALL_VALUES,
    ATTRIBUTE_HEADER,
    COPY_HEADER,
    DOC_KINDS,
    PHASES,
    Corpus,
    CorpusMix,
    lookup_probe_rows,
    nonce_names,
    phases_for,
    primitive_runs,
    shuffle_multiset,
)


@pytest.fixture(scope="module")
def corpus():
    return Corpus(World(WorldConfig(n_documents=300)))


def run(corpus, kind, seed):
    """One document of a kind, and the nats of its choices (without the choice of the kind)."""
    ch = Chooser(random.Random(seed))
    return getattr(corpus, kind)(ch), ch.nats


# ------------------------------------------------------------------ exact nats, kind by kind
def test_mixes_are_valid_and_every_kind_appears(corpus):
    mix = CorpusMix()
    for phase in PHASES:
        assert set(mix.of(phase)) <= set(DOC_KINDS) and sum(mix.of(phase).values()) == pytest.approx(1)
    assert set(mix.final) == set(DOC_KINDS) and mix.of("val") == mix.final
    with pytest.raises(ValueError, match="sums to"):
        CorpusMix(phase1={"loop": 0.5})
    with pytest.raises(ValueError, match="unknown kinds"):
        CorpusMix(phase1={"loops": 1.0})
    with pytest.raises(ValueError, match="unknown corpus phase"):
        mix.of("phase3")
    assert phases_for(3) == ["phase1", "phase2", "final"] and phases_for(1) == ["final"]
    assert phases_for(4) == ["phase1", "phase2", "final", "final"]


def test_document_nats_are_the_kind_plus_the_kind_generator(corpus):
    kinds = set()
    for i in range(60):
        d = corpus.document("final", i)
        ch = Chooser(corpus.world._rng(f"doc-final-{i}"))
        kind = ch.weighted(corpus.mix.final)
        assert ch.nats == pytest.approx(-math.log(corpus.mix.final[kind]))
        assert getattr(corpus, kind)(ch) == d.text and d.nats == ch.nats
        assert corpus.kind_of("final", i) == kind
        kinds.add(kind)
    assert len(kinds) >= 6


def test_loop_nats_count_the_primitive_runs(corpus):
    m = len(corpus.words)
    for seed in range(30):
        text, nats = run(corpus, "loop", seed)
        words = text.split()
        r = next(p for p in range(2, 7) if all(words[i] == words[i % p] for i in range(len(words))))
        assert 12 <= len(words) <= 30 and "." not in text
        assert nats == pytest.approx(math.log(5) + math.log(primitive_runs(m, r)) + math.log(19))


def test_primitive_runs_and_multiset_shuffle_count_by_brute_force():
    for m, r in [(2, 4), (3, 6), (3, 2), (4, 1)]:
        runs = list(itertools.product(range(m), repeat=r))
        primitive = [w for w in runs if not any(r % d == 0 and w == w[:d] * (r // d) for d in range(1, r))]
        assert primitive_runs(m, r) == len(primitive)
    ch = Chooser(random.Random(0))
    items = [0, 0, 0, 1, 1, 1]
    shuffle_multiset(ch, items, 3)
    assert sorted(items) == [0, 0, 0, 1, 1, 1]
    assert ch.nats == pytest.approx(math.log(len(set(itertools.permutations([0, 0, 0, 1, 1, 1])))))


def test_lookup_nats_and_requeried_values_equal_the_mapping(corpus):
    n_nonce, counts = len(corpus.nonce), Counter()
    for seed in range(60):
        ch = Chooser(random.Random(seed))
        lines = corpus.lookup_lines(ch)
        mapping, shown = {}, Counter()
        for key, value, again in lines:
            assert again == (key in mapping)                      # the first line shows, later ones re-query
            assert mapping.setdefault(key, value) == value        # a re-query repeats the shown value
            shown[key] += 1
        n, copies = len(mapping), shown[lines[0][0]]
        assert 2 <= n <= 8 and 3 <= copies <= 5 and set(shown.values()) == {copies}  # each value equally often
        assert len(set(mapping.values())) == n and set(mapping.values()) <= set(ALL_VALUES)
        world_keys = set(mapping) <= set(corpus.names)
        assert world_keys or set(mapping) <= set(corpus.nonce)
        counts[world_keys] += 1
        pool = len(corpus.names) if world_keys else n_nonce
        expected = (math.log(7) + math.log(2) + math.log(math.comb(pool, n)) + math.log(math.perm(24, n))
                    + math.log(3) + math.lgamma(n * copies + 1) - n * math.lgamma(copies + 1))
        assert ch.nats == pytest.approx(expected)
    assert counts[True] > 10 and counts[False] > 10                # world names AND nonce names


def test_copy_attributes_and_fact_nats(corpus):
    for seed in range(20):
        text, nats = run(corpus, "copy", seed)
        seq = text[len(COPY_HEADER) + 1:].split(" . ")[0].split()
        assert text == f"{COPY_HEADER} {' '.join(seq)} . {' '.join(seq)} ."
        assert nats == pytest.approx(math.log(8) + len(seq) * math.log(len(corpus.nonce)))
        text, nats = run(corpus, "attributes", seed)
        lines = text.split("\n")
        assert lines[0] == ATTRIBUTE_HEADER and 3 <= len(lines) - 1 <= 8
        assert nats == pytest.approx(math.log(3) + math.log(6) + math.log(math.perm(30, len(lines) - 1)))
        text, nats = run(corpus, "facts", seed)
        assert nats == pytest.approx(math.log(6) + text.count(" .") * math.log(30 * 3 * 3))


def test_attribute_lists_are_true_facts_of_one_attribute(corpus):
    world = corpus.world
    for seed in range(20):
        text, _ = run(corpus, "attributes", seed)
        pairs = [line.split(" : ") for line in text.split("\n")[1:]]
        attribute = next(a for a in VALUES if pairs[0][1] in VALUES[a])
        assert all(world.entity(name).get(attribute) == value for name, value in pairs)


def test_icl_task_episodes_are_true_facts_and_need_the_shots():
    world = World(WorldConfig(n_documents=10))
    rng = random.Random(0)
    attributes = Counter()
    for _ in range(200):
        text, answer, candidates = world.icl_task_episode(rng, 3)
        lines = text.split("\n")
        assert lines[0] == ATTRIBUTE_HEADER and len(lines) == 5 and lines[-1].endswith(" :")
        pairs = [line.split(" : ") for line in lines[1:-1]]
        query = lines[-1][:-2]
        attribute = next(a for a in VALUES if answer in VALUES[a])
        assert world.entity(query).get(attribute) == answer and query not in dict(pairs)
        assert all(world.entity(name).get(attribute) == value for name, value in pairs)
        assert candidates == list(ALL_VALUES)
        attributes[attribute] += 1
    assert min(attributes.values()) > 40                          # one attribute in three: 0-shot is ambiguous
    assert world.icl_task_episode(rng, 0)[0].count("\n") == 1
    with pytest.raises(ValueError, match="n_shots"):
        world.icl_task_episode(rng, -1)


# ------------------------------------------------------------------ the stream
def test_same_seed_same_stream_and_document_i_depends_only_on_phase_and_i():
    a, b = Corpus(World(WorldConfig(seed=0))), Corpus(World(WorldConfig(seed=0)))
    texts = [d.text for d in a.documents("phase1", 30)]
    assert texts == [d.text for d in b.documents("phase1", 30)]
    assert texts[10:] == [d.text for d in a.documents("phase1", 20, start=10)]
    assert texts != [d.text for d in a.documents("phase2", 30)]
    assert [d.text for d in a.documents("val", 30)] != [d.text for d in a.documents("final", 30)]
    other = Corpus(World(WorldConfig(seed=1)))
    assert texts != [d.text for d in other.documents("phase1", 30)]


def test_each_phase_follows_its_mix(corpus):
    for phase in PHASES:
        kinds = Counter(corpus.kind_of(phase, i) for i in range(1000))
        for kind, share in corpus.mix.of(phase).items():
            assert abs(kinds[kind] / 1000 - share) < 0.05, (phase, kind)
    final = [d.text for d in corpus.documents("final", 600)]
    assert any(t.startswith(COPY_HEADER) for t in final) and any(t.startswith(ATTRIBUTE_HEADER) for t in final)


def test_held_out_prompts_not_in_any_phase(corpus):
    held_out = corpus.world.held_out_texts()
    for phase in PHASES:
        threads = [d.text for d in corpus.documents(phase, 400) if d.text.startswith("<|user|>")]
        questions = {q.split("\n")[0] for t in threads for q in t.split("<|user|>")[1:]}
        assert threads and not questions & held_out


def test_nonce_names_are_not_world_words():
    world = World(WorldConfig(n_documents=10))
    nonce = nonce_names(world)
    assert len(nonce) == len(set(nonce)) > 4000
    assert not set(nonce) & set(world.by_name) and not set(nonce) & set(ALL_VALUES)


def test_probe_rows_score_only_requeried_values():
    rows = lookup_probe_rows(World(WorldConfig(n_documents=10)), n=20)
    for row in rows:
        text = "".join(piece for piece, _ in row)
        lines = text.split("\n")[1:]
        scored = [piece.strip() for piece, s in row if s]
        first = {}
        expected = []
        for line in lines:
            key, value = line.split(" ")
            if key in first:
                expected.append(value)
            first.setdefault(key, value)
        assert scored == expected and scored
