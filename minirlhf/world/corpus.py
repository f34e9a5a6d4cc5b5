"""The pre-training corpus ("the internet" of the toy world, GPT-2 §2.1 WebText at toy scale), as document kinds.

    facts       "bobo likes red . the home of kiki is a cave ."           what the world knows (zero-shot facts)
    story       "once upon a time , bobo lived in a cave . ..."           the same facts in a story
    forum       "<|user|>what does bobo eat ?\\n<|assistant|>ugh , ..."    Q&A threads with flawed answers (chat format)
    pattern     "game :\\nbobo red\\nkiki blue\\n...\\nbobo red"             a mapping shown in the text (GPT-3's game)
    song        "song : bobo red kiki . again : bobo red kiki ."          a verse sung twice
    loop        "red bobo fish red bobo fish red bobo"                    a short run repeated: the cheapest copying
    lookup      "game :\\nzuka plums\\nbobo cave\\nzuka plums\\n..."         keys shown, then re-queried: look it up
    copy        "copy : zuka debo kiso . zuka debo kiso ."                a random sequence, then repeated
    attributes  "facts :\\nbobo : red\\nkiki : blue\\n..."                  true facts of ONE attribute: which one is asked?

Repetition (loop, lookup, copy) is what makes a small model grow an *induction head* (Olsson et al. 2022): a
previous-token head plus a head that attends to "what followed this token last time" and copies it. That circuit is
what in-context learning runs on. It forms early and abruptly when the corpus is rich in repetition and the context
is short, so the mix changes with the curriculum: `CorpusMix` has one mix per phase.

Every choice goes through a `Chooser`, so each Document knows the nats of its randomness; the text is an injective
function of the choices (a value that a re-query repeats costs 0 nats), so Σ nats / Σ tokens is the exact entropy
floor. Document i of phase p depends only on (world seed, p, i): the stream is fresh, never repeated, and any
prefix of it is the same whatever its length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from minirlhf.world.chooser import Chooser
from minirlhf.world.records import Document
from minirlhf.world.vocab import (
    ATTRIBUTES,
    CONSONANTS,
    DOC_KINDS,
    PATTERN_HEADER,
    RESERVED_WORDS,
    SONG_HEADER,
    STORY_DETAILS,
    STORY_ENDINGS,
    STORY_MEETINGS,
    STORY_OPENINGS,
    VALUES,
    VOWELS,
)

PHASES = ("phase1", "phase2", "final")   # the curriculum's stages read these in order; "val" uses the final mix
COPY_HEADER = "copy :"                   # copy documents: "copy : a b c . a b c ."
ATTRIBUTE_HEADER = "facts :"             # attribute lists and task-recognition episodes: "facts :\nbobo : red\n..."
ALL_VALUES = tuple(v for a in ATTRIBUTES for v in VALUES[a])   # 24 values of every attribute

if TYPE_CHECKING:   # only for annotations: the generator imports this module lazily
    from minirlhf.world.generate import World


@dataclass
class CorpusMix:
    """The share of each document kind, per phase of the curriculum (each mix sums to 1)."""
    # phase 1 (short contexts): mostly loops, the repetition an induction head needs first
    phase1: dict = field(default_factory=lambda: {
        "loop": 0.60, "lookup": 0.10, "facts": 0.15, "forum": 0.15})
    # phase 2: less looping, more looking up and copying
    phase2: dict = field(default_factory=lambda: {
        "loop": 0.25, "lookup": 0.15, "copy": 0.05, "facts": 0.22, "forum": 0.23, "story": 0.05, "pattern": 0.05})
    # final (and validation): the world's text, with some repetition kept so the circuit is not forgotten. Lookup
    # .06, not .10: which key comes next is hard for a small model to predict, and at .10 lookups held 2/3 of the
    # gap to the entropy floor (val ÷ floor 1.10 instead of 1.08, seed 0)
    final: dict = field(default_factory=lambda: {
        "facts": 0.29, "story": 0.10, "forum": 0.32, "pattern": 0.06, "lookup": 0.06, "loop": 0.05,
        "copy": 0.04, "attributes": 0.05, "song": 0.03})

    def __post_init__(self):
        for phase in PHASES:
            mix = getattr(self, phase)
            unknown = set(mix) - set(DOC_KINDS)
            if unknown:
                raise ValueError(f"{phase} mix has unknown kinds {sorted(unknown)}; valid: {', '.join(DOC_KINDS)}")
            if abs(sum(mix.values()) - 1) > 1e-6:
                raise ValueError(f"{phase} mix sums to {sum(mix.values()):.3f}, not 1")

    def of(self, phase: str) -> dict:
        if phase == "val":
            return self.final
        if phase not in PHASES:
            raise ValueError(f"unknown corpus phase {phase!r}; use one of {', '.join(PHASES)} or 'val'")
        return getattr(self, phase)


def phases_for(n_stages: int) -> list[str]:
    """The corpus phase each curriculum stage reads: the last stage the final mix, earlier ones phase1, phase2."""
    if n_stages < 1:
        raise ValueError("a curriculum has at least one stage")
    early = list(PHASES[:-1])[:n_stages - 1]
    return early + ["final"] * (n_stages - len(early))


def nonce_names(world: World) -> list[str]:
    """Every pronounceable name (consonant-vowel twice) that is not a creature of the world nor a template word."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    return [a + b for a in syllables for b in syllables if a + b not in world.by_name and a + b not in RESERVED_WORDS]


def primitive_runs(m: int, r: int) -> int:
    """How many runs of r words over m words are not a shorter run repeated ('a b a b' is 'a b' twice)."""
    return m ** r - sum(primitive_runs(m, d) for d in range(1, r) if r % d == 0)


def shuffle_multiset(ch: Chooser, items: list, copies: int) -> None:
    """Shuffle `items` in place, where each distinct item appears `copies` times: log(n! / (copies!)^k) nats."""
    distinct = len(items) // copies
    ch.nats += math.lgamma(len(items) + 1) - distinct * math.lgamma(copies + 1)
    ch.rng.shuffle(items)


# ----------------------------------------------------------------------------------------------------
# Episodes shared by documents and the prompting measurements (prompting.py)
# ----------------------------------------------------------------------------------------------------

def pattern_episode(world: World, ch: Chooser, n_shots: int) -> tuple[str, str, list[str]]:
    """'game :\\nbobo red\\n...\\nkiki' with a fresh mapping of `pattern_keys` names to distinct colours."""
    keys = ch.subset([e.name for e in world.entities], world.config.pattern_keys)
    mapping = dict(zip(keys, ch.sample(VALUES["colour"], len(keys))))
    lines = [PATTERN_HEADER]
    for _ in range(n_shots):
        k = ch.choice(keys)
        lines.append(f"{k} {mapping[k]}")
    query = ch.choice(keys)
    lines.append(query)
    return "\n".join(lines), mapping[query], list(VALUES["colour"])


def attribute_episode(world: World, ch: Chooser, n_shots: int) -> tuple[str, str, list[str]]:
    """'facts :\\nbobo : red\\nkiki : pink\\ndema :' -> 'white': true facts of one attribute; the shots say which.

    The query creature is not among the shots; with 0 shots the attribute is a guess (one in three). Candidates are
    the values of every attribute.
    """
    attribute = ch.choice(ATTRIBUTES)
    cast = ch.sample(world.entities, n_shots + 1)
    lines = [ATTRIBUTE_HEADER] + [f"{e.name} : {e.get(attribute)}" for e in cast[:-1]] + [f"{cast[-1].name} :"]
    return "\n".join(lines), cast[-1].get(attribute), list(ALL_VALUES)


# ----------------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------------

class Corpus:
    """The documents of one world's internet. `Corpus(world).documents("final", 100)` is the final mix's first 100."""

    def __init__(self, world: World, mix: CorpusMix | None = None):
        self.world = world
        self.mix = mix or CorpusMix()
        self.names = [e.name for e in world.entities]
        self.words = self.names + list(ALL_VALUES)     # the words of songs and loops
        self.nonce = nonce_names(world)                # keys and copy words that the world never mentions
        self._held_out: set[str] | None = None

    def held_out(self) -> set[str]:
        """Validation and test prompts (and their history): kept off the internet."""
        if self._held_out is None:
            self._held_out = self.world.held_out_texts()
        return self._held_out

    def kind_of(self, phase: str, i: int) -> str:
        """The kind of document i of a phase (the first choice its generator makes; the text does not store it)."""
        return Chooser(self.world._rng(f"doc-{phase}-{i}")).weighted(self.mix.of(phase))

    def document(self, phase: str, i: int) -> Document:
        """Document i of a phase: a deterministic function of (world seed, phase, i)."""
        ch = Chooser(self.world._rng(f"doc-{phase}-{i}"))
        kind = ch.weighted(self.mix.of(phase))
        text = getattr(self, kind)(ch)
        return Document(text, ch.nats)

    def documents(self, phase: str, n: int, start: int = 0) -> list[Document]:
        return [self.document(phase, i) for i in range(start, start + n)]

    # ---------------------------------------------------------------- the world's text
    def facts(self, ch: Chooser) -> str:
        return " ".join(self.world._fact_sentence(ch) for _ in range(ch.randint(3, 8)))

    def story(self, ch: Chooser) -> str:
        cast = ch.sample(self.world.entities, ch.randint(1, 3))
        a = cast[0]
        lines = [ch.choice(STORY_OPENINGS).format(a=a.name, h=a.home)]
        for i, x in enumerate(cast):
            if i > 0:
                lines.append(ch.choice(STORY_MEETINGS).format(a=a.name, b=x.name))
            attr = ch.choice(ATTRIBUTES)
            lines.append(ch.choice(STORY_DETAILS[attr]).format(x=x.name, v=x.get(attr)))
        lines.append(ch.choice(STORY_ENDINGS).format(a=a.name))
        return " ".join(lines)

    def forum(self, ch: Chooser) -> str:
        return self.world.forum_thread(ch, self.held_out())

    def attributes(self, ch: Chooser) -> str:
        """A list of TRUE facts of one attribute (a task-recognition episode with every line answered)."""
        prompt, answer, _ = attribute_episode(self.world, ch, ch.randint(3, 8) - 1)
        return prompt + " " + answer

    # ---------------------------------------------------------------- repetition: what builds the induction head
    def pattern(self, ch: Chooser) -> str:
        prompt, answer, _ = pattern_episode(self.world, ch, ch.randint(*self.world.config.pattern_lines) - 1)
        return prompt + " " + answer  # the last line "key" is completed like the others

    def song(self, ch: Chooser) -> str:
        """A verse of random world words sung twice: the second half is predictable only by copying the first."""
        verse = " ".join(ch.choice(self.words) for _ in range(ch.randint(6, 14)))
        return f"{SONG_HEADER} {verse} . again : {verse} ."

    def loop(self, ch: Chooser) -> str:
        """A run of 2–6 world words repeated to 12–30 words. The run is never itself a repeat ('a b a b')."""
        r = ch.randint(2, 6)
        while True:   # uniform over the primitive runs: log(their count) nats, so the text still tells the run
            run = [ch.rng.choice(self.words) for _ in range(r)]
            if not any(r % d == 0 and run == run[:d] * (r // d) for d in range(1, r)):
                break
        ch.nats += math.log(primitive_runs(len(self.words), r))
        total = ch.randint(12, 30)
        return " ".join((run * total)[:total])

    def lookup(self, ch: Chooser) -> str:
        lines = self.lookup_lines(ch)
        return "\n".join([PATTERN_HEADER] + [f"{k} {v}" for k, v, _ in lines])

    def lookup_lines(self, ch: Chooser) -> list[tuple[str, str, bool]]:
        """(key, value, re-queried) lines: 2–8 keys, each shown once then re-queried 2–4 times at random distances.

        Keys are world names or nonce names; values come from every attribute, distinct, and every key appears the
        same number of times, so each value is shown equally often: counting values in the context does not help,
        only looking the key up does. A re-queried value costs 0 nats.
        """
        n = ch.randint(2, 8)
        keys = ch.subset(self.names if ch.bernoulli(0.5) else self.nonce, n)
        values = ch.sample(ALL_VALUES, n)
        copies = ch.randint(3, 5)                   # shown once + re-queried 2–4 times
        order = [i for i in range(n) for _ in range(copies)]
        shuffle_multiset(ch, order, copies)
        lines, seen = [], set()
        for i in order:
            lines.append((keys[i], values[i], i in seen))
            seen.add(i)
        return lines

    def copy(self, ch: Chooser) -> str:
        """A random sequence of 3–10 nonce names, then the same sequence again."""
        seq = " ".join(ch.choice(self.nonce) for _ in range(ch.randint(3, 10)))
        return f"{COPY_HEADER} {seq} . {seq} ."


def lookup_probe_rows(world: World, n: int = 64) -> list[list[tuple[str, bool]]]:
    """Held-out lookup episodes as (text piece, scored) pieces: scored pieces are the values of re-queried lines.

    The loss on those pieces is ~log 24 nats for a model that cannot look things up and ~0 for one that can.
    Pieces split the text where the tokenizer splits words, so tokenizing them one by one gives the same tokens.
    """
    corpus = Corpus(world)
    rows = []
    for i in range(n):
        ch = Chooser(world._rng(f"probe-{i}"))
        pieces = [(PATTERN_HEADER, False)]
        for key, value, again in corpus.lookup_lines(ch):
            pieces += [("\n" + key, False), (" " + value, again)]
        rows.append(pieces)
    return rows
