"""The toy world: creatures with attributes, all the text the course trains on, and the instruction prompts.

Everything a language model learns in this course is generated here, from one seed:

* the *pre-training corpus* ("the internet", GPT-2 §2.1 WebText at toy scale): fact sentences, short
  stories, forum Q&A threads in the chat format whose answers are realistically flawed (wrong, rude,
  rambling, off-topic, never ending), and pattern documents that reward in-context learning (GPT-3 §2);
* the *instruction prompts* (InstructGPT §3.2, the "API prompt distribution") split into train/val/test,
  and *demonstrations* for a small share of the training prompts (the SFT data, §3.5);
* episodes for the GPT-2 zero-shot and GPT-3 few-shot slides.

The programmatic labeler that plays the human rater lives in `minirlhf.gold` (re-exported here).

Every random choice the generator makes goes through `Chooser`, which adds up -log p of each choice, so
every `Document` knows how many nats of randomness it holds. Because the text is (as far as reasonable)
an injective function of those choices, sum(nats) / sum(tokens) is the corpus's entropy floor: the lowest
loss per token a perfect model that knows every world fact could reach.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

# ----------------------------------------------------------------------------------------------------
# Vocabulary of the world
# ----------------------------------------------------------------------------------------------------

ATTRIBUTES = ("colour", "food", "home")
VALUES = {
    "colour": ("red", "blue", "green", "yellow", "pink", "black", "white", "orange"),
    "food": ("plums", "bread", "figs", "nuts", "rice", "fish", "apples", "cheese"),
    "home": ("cave", "barn", "nest", "tree", "pond", "hut", "burrow", "tent"),
}
VALUE_ATTRIBUTE = {v: a for a, vs in VALUES.items() for v in vs}  # "plums" -> "food"
PLURAL = {"colour": "colours", "food": "foods", "home": "homes"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

# Words that make an answer rude: the gold labeler's `harmless` criterion is 0 if any of them appears.
RUDE_WORDS = ("ugh", "stupid", "obviously", "whatever", "dumb", "idiot", "boring", "annoying")
RUDE_PREFIXES = ("ugh , ", "obviously , ", "stupid question . ", "whatever . ")
RUDE_SUFFIXES = (" dumb question .", " obviously .", " that was boring .", " you are annoying .")
POLITE_PREFIXES = {"": 0.6, "sure , ": 0.2, "of course , ": 0.2}  # forum answers sometimes add one
OFF_TOPIC = ("the weather is nice today .", "i like to sing songs .", "my cat is asleep .",
             "have a nice day .", "i forgot my hat at home .", "let us talk about the sea .")

TASKS = ("fact", "context", "list", "describe", "yesno")
SPLITS = ("train", "val", "test")
DOC_KINDS = ("facts", "story", "forum", "pattern", "song")
ANSWER_MODES = ("correct", "wrong", "rude", "rambling", "off_topic", "endless")

# One statement per attribute in several phrasings: the first is the plain one that ideal answers use.
FACT_TEMPLATES = {
    "colour": ("{e} likes {v} .", "the favourite colour of {e} is {v} .", "{e} loves the colour {v} ."),
    "food": ("{e} eats {v} .", "the favourite food of {e} is {v} .", "{e} likes to eat {v} ."),
    "home": ("{e} lives in a {v} .", "the home of {e} is a {v} .", "{e} sleeps in a {v} ."),
}
PREDICATE = {"colour": "likes {v}", "food": "eats {v}", "home": "lives in a {v}"}  # "bobo" + predicate
QUESTION_TEMPLATES = {
    "colour": ("what colour does {e} like ?", "what is the favourite colour of {e} ?", "which colour does {e} love ?"),
    "food": ("what does {e} eat ?", "what is the favourite food of {e} ?", "what food does {e} like ?"),
    "home": ("where does {e} live ?", "what is the home of {e} ?", "where does {e} sleep ?"),
}
YESNO_TEMPLATES = {"colour": "does {e} like {v} ?", "food": "does {e} eat {v} ?", "home": "does {e} live in a {v} ?"}
LIST_TEMPLATES = ("name {n} {c}{x} .", "list {n} {c}{x} .", "give me {n} {c}{x} .", "can you name {n} {c}{x} ?")
DESCRIBE_TEMPLATES = ("tell me about {e} in {n} {s} .", "describe {e} in {n} {s} .", "write {n} {s} about {e} .")
CONTEXT_PREFIXES = ("", "read this : ", "here is a fact . ")
ZERO_SHOT_TEMPLATES = {"colour": "the favourite colour of {e} is", "food": "the favourite food of {e} is",
                       "home": "{e} lives in a"}

STORY_OPENINGS = ("once upon a time , {a} lived in a {h} .", "one morning {a} woke up in a {h} .",
                  "this is a story about {a} , who lives in a {h} .")
STORY_MEETINGS = ("{a} met {b} .", "{b} came to visit {a} .", "{a} went to see {b} .")
STORY_DETAILS = {
    "colour": ("{x} wore a {v} hat .", "{x} painted a {v} picture ."),
    "food": ("{x} ate some {v} .", "{x} shared some {v} ."),
    "home": ("{x} went back to the {v} .", "{x} showed everyone the {v} ."),
}
STORY_ENDINGS = ("the end .", "they were happy .", "then {a} went to sleep .")

PATTERN_HEADER = "game :"  # pattern documents and ICL episodes: "game :\nbobo red\nkiki blue\n...\nbobo"
# Pattern lines are "key value" with nothing between: the value is predicted right after its key, so one
# "induction head" (attend to what followed this key before, copy it) solves the task. With "key -> value" the
# model must match the key two tokens back, a circuit a 1M-parameter model did not find in its pre-training budget.
SONG_HEADER = "song :"    # songs repeat their verse ("song : a b c . again : a b c ."): pure copying practice
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"

# Every word the templates use: generated names must never be one of them.
_TEMPLATE_TEXT = " ".join([*RUDE_WORDS, *RUDE_PREFIXES, *RUDE_SUFFIXES, *POLITE_PREFIXES, *OFF_TOPIC,
                           *[t for ts in FACT_TEMPLATES.values() for t in ts], *PREDICATE.values(),
                           *[t for ts in QUESTION_TEMPLATES.values() for t in ts], *YESNO_TEMPLATES.values(),
                           *LIST_TEMPLATES, *DESCRIBE_TEMPLATES, *CONTEXT_PREFIXES, *STORY_OPENINGS,
                           *STORY_MEETINGS, *[t for ts in STORY_DETAILS.values() for t in ts], *STORY_ENDINGS,
                           *[v for vs in VALUES.values() for v in vs], *NUMBER_WORDS, *PLURAL.values(),
                           "yes no and not other than sentence sentences game", *ZERO_SHOT_TEMPLATES.values()])
RESERVED_WORDS = frozenset(re.findall(r"[a-z]+", _TEMPLATE_TEXT))


# ----------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------

@dataclass
class WorldConfig:
    seed: int = 0                    # everything below is a deterministic function of this seed
    n_entities: int = 30             # creatures with a name, a favourite colour, a food and a home
    n_documents: int = 14_000        # pre-training documents (~0.53M words, ~0.6M BPE tokens, 2.5 MB of text)
    doc_mix: dict = field(default_factory=lambda: {  # share of each document kind in the corpus
        "facts": 0.30, "story": 0.12, "forum": 0.33, "pattern": 0.15, "song": 0.10})  # patterns: ~25% of tokens
    answer_mix: dict = field(default_factory=lambda: {  # how forum answers go wrong (the model is NOT aligned)
        "correct": 0.35, "wrong": 0.15, "rude": 0.15, "rambling": 0.15, "off_topic": 0.10, "endless": 0.10})
    two_turn_prob: float = 0.25      # forum threads with a second question
    n_prompts: dict = field(default_factory=lambda: {"train": 600, "val": 100, "test": 150})
    task_mix: dict = field(default_factory=lambda: {  # world-fact tasks stay a minority: a small RM cannot
        "fact": 0.20, "context": 0.35, "list": 0.20, "describe": 0.15, "yesno": 0.10})  # judge facts (CALIBRATION)
    demo_fraction: float = 0.15      # share of TRAIN prompts with a demonstration (InstructGPT: ~13k of ~50k)
    pattern_keys: int = 4            # keys per pattern document / ICL episode (mapping: key -> colour)
    pattern_lines: tuple = (16, 24)  # lines per pattern document (inclusive range)


@dataclass
class Entity:
    name: str
    colour: str
    food: str
    home: str

    def get(self, attribute: str) -> str:
        return getattr(self, attribute)


@dataclass
class Document:
    text: str     # one pre-training document (no trailing EOS unless a chat turn ended there)
    nats: float   # -log p of the random choices that produced it: sum(nats)/sum(tokens) = entropy floor


@dataclass
class Prompt:
    id: str       # "train-0042"
    task: str     # one of TASKS
    text: str     # the user message, without chat markers
    split: str    # "train" | "val" | "test"
    info: dict    # what the gold labeler needs: entity, attribute, answer, n, supplied facts...


@dataclass
class Demonstration:
    prompt: Prompt
    response: str  # the ideal answer, without EOS (the SFT code appends it)


class Chooser:
    """A random.Random that adds -log p of every choice to `self.nats` (the information it generated)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.nats = 0.0

    def choice(self, seq):
        self.nats += math.log(len(seq))
        return self.rng.choice(seq)

    def weighted(self, probs: dict):
        keys = list(probs)
        total = sum(probs.values())
        key = self.rng.choices(keys, weights=[probs[k] for k in keys])[0]
        self.nats -= math.log(probs[key] / total)
        return key

    def randint(self, a: int, b: int) -> int:
        self.nats += math.log(b - a + 1)
        return self.rng.randint(a, b)

    def bernoulli(self, p: float) -> bool:
        hit = self.rng.random() < p
        self.nats -= math.log(p if hit else 1 - p)
        return hit

    def sample(self, seq, k: int) -> list:
        """k distinct items in random order: log(n!/(n-k)!) nats."""
        self.nats += math.log(math.perm(len(seq), k))
        return self.rng.sample(list(seq), k)

    def subset(self, seq, k: int) -> list:
        """k distinct items in their original order: log C(n, k) nats."""
        seq = list(seq)
        self.nats += math.log(math.comb(len(seq), k))
        picked = set(self.rng.sample(range(len(seq)), k))
        return [x for i, x in enumerate(seq) if i in picked]


# ----------------------------------------------------------------------------------------------------
# Small text helpers (shared with the gold labeler)
# ----------------------------------------------------------------------------------------------------

def statement(name: str, attribute: str, value: str, template: int = 0) -> str:
    """'bobo likes red .' (template 0 is the plain phrasing that ideal answers use)."""
    return FACT_TEMPLATES[attribute][template].format(e=name, v=value)


def join_items(items: list[str]) -> str:
    """['red'] -> 'red' ; ['red', 'blue'] -> 'red and blue' ; 3+ -> 'red , blue and green'."""
    if len(items) <= 1:
        return "".join(items)
    return " , ".join(items[:-1]) + " and " + items[-1]


def describe_sentences(name: str, facts: list[tuple[str, str]], n_sentences: int) -> str:
    """Spread (attribute, value) facts over n sentences, each starting with the name."""
    if not 1 <= n_sentences <= len(facts):
        raise ValueError(f"n_sentences={n_sentences} must be between 1 and {len(facts)}")
    size = math.ceil(len(facts) / n_sentences)  # 3 facts in 2 sentences -> 2 + 1
    groups = [facts[i * size:(i + 1) * size] for i in range(n_sentences)]
    return " ".join(name + " " + join_items([PREDICATE[a].format(v=v) for a, v in g]) + " ." for g in groups)


def _make_name(ch: Chooser) -> str:
    return "".join(ch.choice(CONSONANTS) + ch.choice(VOWELS) for _ in range(2))


# ----------------------------------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------------------------------

class World:
    """A seeded toy world. All generators are deterministic functions of `config.seed`."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        if self.config.n_entities < self.config.pattern_keys:
            raise ValueError(f"n_entities={self.config.n_entities} is smaller than pattern_keys="
                             f"{self.config.pattern_keys}; use at least {self.config.pattern_keys} entities")
        self.entities = self._make_entities()
        self.by_name = {e.name: e for e in self.entities}
        self._prompts: dict[str, list[Prompt]] | None = None

    def _rng(self, purpose: str) -> random.Random:
        return random.Random(f"minirlhf-world-{self.config.seed}-{purpose}")  # str seeds are stable across runs

    def _make_entities(self) -> list[Entity]:
        ch = Chooser(self._rng("entities"))
        names: list[str] = []
        while len(names) < self.config.n_entities:
            name = _make_name(ch)
            if name not in names and name not in RESERVED_WORDS:
                names.append(name)
        return [Entity(n, *(ch.choice(VALUES[a]) for a in ATTRIBUTES)) for n in names]

    def entity(self, name: str) -> Entity:
        if name not in self.by_name:
            raise ValueError(f"no creature called {name!r} in this world; known: {', '.join(self.by_name)}")
        return self.by_name[name]

    def new_name(self, ch: Chooser) -> str:
        """A pronounceable name that is NOT a creature of the world (for `context` prompts)."""
        while True:
            name = _make_name(ch)
            if name not in self.by_name and name not in RESERVED_WORDS:
                return name

    # ---------------------------------------------------------------- pre-training corpus
    def corpus(self, n_documents: int | None = None) -> list[Document]:
        """The pre-training corpus. Document i depends only on (seed, i): corpus(100) is a prefix of corpus()."""
        n = self.config.n_documents if n_documents is None else n_documents
        held_out = {p.text for s in ("val", "test") for p in self.prompts(s)}
        return [self._document(Chooser(self._rng(f"doc-{i}")), held_out) for i in range(n)]

    def _document(self, ch: Chooser, held_out: set[str]) -> Document:
        kind = ch.weighted(self.config.doc_mix)
        text = {"facts": self._fact_doc, "story": self._story_doc, "forum": lambda c: self._forum_doc(c, held_out),
                "pattern": self._pattern_doc, "song": self._song_doc}[kind](ch)
        return Document(text, ch.nats)

    def _fact_sentence(self, ch: Chooser) -> str:
        e = ch.choice(self.entities)
        a = ch.choice(ATTRIBUTES)
        return statement(e.name, a, e.get(a), ch.randint(0, len(FACT_TEMPLATES[a]) - 1))

    def _fact_doc(self, ch: Chooser) -> str:
        return " ".join(self._fact_sentence(ch) for _ in range(ch.randint(3, 8)))

    def _story_doc(self, ch: Chooser) -> str:
        cast = ch.sample(self.entities, ch.randint(1, 3))
        a = cast[0]
        lines = [ch.choice(STORY_OPENINGS).format(a=a.name, h=a.home)]
        for i, x in enumerate(cast):
            if i > 0:
                lines.append(ch.choice(STORY_MEETINGS).format(a=a.name, b=x.name))
            attr = ch.choice(ATTRIBUTES)
            lines.append(ch.choice(STORY_DETAILS[attr]).format(x=x.name, v=x.get(attr)))
        lines.append(ch.choice(STORY_ENDINGS).format(a=a.name))
        return " ".join(lines)

    def _pattern_doc(self, ch: Chooser) -> str:
        prompt, answer, _ = self._pattern(ch, ch.randint(*self.config.pattern_lines) - 1)
        return prompt + " " + answer  # the last line "key" is completed like the others

    def _song_doc(self, ch: Chooser) -> str:
        """A verse of random world words sung twice: the second half is predictable only by copying the first."""
        words = [e.name for e in self.entities] + [v for vs in VALUES.values() for v in vs]
        verse = " ".join(ch.choice(words) for _ in range(ch.randint(6, 14)))
        return f"{SONG_HEADER} {verse} . again : {verse} ."

    def _pattern(self, ch: Chooser, n_shots: int) -> tuple[str, str, list[str]]:
        """'game :\\nbobo red\\n...\\nkiki' with a fresh mapping of `pattern_keys` names to distinct colours."""
        keys = ch.subset([e.name for e in self.entities], self.config.pattern_keys)
        mapping = dict(zip(keys, ch.sample(VALUES["colour"], len(keys))))
        lines = [PATTERN_HEADER]
        for _ in range(n_shots):
            k = ch.choice(keys)
            lines.append(f"{k} {mapping[k]}")
        query = ch.choice(keys)
        lines.append(query)
        return "\n".join(lines), mapping[query], list(VALUES["colour"])

    def _forum_doc(self, ch: Chooser, held_out: set[str]) -> str:
        """A Q&A thread in the chat format: <|user|>q\\n<|assistant|>a<|endoftext|> (sometimes two turns)."""
        turns = []
        for turn in range(2):
            while True:
                task = ch.weighted(self.config.task_mix)
                text, info = self._make_prompt(ch, task)
                if text not in held_out:  # keep val/test prompts off "the internet"
                    break
            answer, ended = self.flawed_answer(Prompt("forum", task, text, "forum", info), ch)
            turns.append(f"<|user|>{text}\n<|assistant|>{answer}" + ("<|endoftext|>" if ended else ""))
            if not ended or turn == 1 or not ch.bernoulli(self.config.two_turn_prob):
                break
        return "\n".join(turns)

    # ---------------------------------------------------------------- prompts
    def _make_prompt(self, ch: Chooser, task: str) -> tuple[str, dict]:
        if task == "fact":
            e, a = ch.choice(self.entities), ch.choice(ATTRIBUTES)
            text = ch.choice(QUESTION_TEMPLATES[a]).format(e=e.name)
            return text, {"entity": e.name, "attribute": a, "answer": e.get(a)}
        if task == "context":
            name = self.new_name(ch)
            attrs = ch.sample(ATTRIBUTES, ch.randint(2, 3))
            facts = {a: ch.choice(VALUES[a]) for a in attrs}
            preds = [PREDICATE[a].format(v=facts[a]) for a in attrs]
            if ch.bernoulli(0.5):
                supplied = f"{name} {join_items(preds)} ."
            else:
                supplied = " ".join(f"{name} {p} ." for p in preds)
            asked = ch.choice(attrs)
            question = ch.choice(QUESTION_TEMPLATES[asked]).format(e=name)
            text = ch.choice(CONTEXT_PREFIXES) + supplied + " " + question
            return text, {"entity": name, "attribute": asked, "answer": facts[asked], "facts": facts}
        if task == "list":
            a, n = ch.choice(ATTRIBUTES), ch.randint(1, 4)
            exclude = ch.choice(VALUES[a]) if ch.bernoulli(0.4) else None
            noun = a if n == 1 else PLURAL[a]
            x = f" other than {exclude}" if exclude else ""
            text = ch.choice(LIST_TEMPLATES).format(n=NUMBER_WORDS[n], c=noun, x=x)
            return text, {"attribute": a, "n": n, "exclude": exclude}
        if task == "describe":
            e, n = ch.choice(self.entities), ch.randint(1, 3)
            s = "sentence" if n == 1 else "sentences"
            text = ch.choice(DESCRIBE_TEMPLATES).format(e=e.name, n=NUMBER_WORDS[n], s=s)
            return text, {"entity": e.name, "n_sentences": n}
        if task == "yesno":
            e, a = ch.choice(self.entities), ch.choice(ATTRIBUTES)
            truth = e.get(a)
            asked = truth if ch.bernoulli(0.5) else ch.choice([v for v in VALUES[a] if v != truth])
            text = YESNO_TEMPLATES[a].format(e=e.name, v=asked)
            return text, {"entity": e.name, "attribute": a, "asked": asked, "answer": truth,
                          "yes": asked == truth}
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")

    def _all_prompts(self) -> dict[str, list[Prompt]]:
        """Generate every split at once with globally unique texts, so no prompt appears in two splits."""
        ch = Chooser(self._rng("prompts"))
        sizes = self.config.n_prompts
        total = sum(sizes.values())
        quota = {t: round(p * total) for t, p in self.config.task_mix.items()}
        seen: set[str] = set()
        pool: list[tuple[str, str, dict]] = []
        for task, q in quota.items():
            made, attempts = 0, 0
            while made < q:
                attempts += 1
                if attempts > 200 * q + 1000:
                    raise ValueError(f"could not make {q} distinct {task!r} prompts; lower n_prompts or "
                                     f"raise n_entities (now {self.config.n_entities})")
                text, info = self._make_prompt(ch, task)
                if text not in seen:
                    seen.add(text)
                    pool.append((task, text, info))
                    made += 1
        ch.rng.shuffle(pool)
        out, start = {}, 0
        for split in SPLITS:
            rows = pool[start:start + sizes[split]]
            out[split] = [Prompt(f"{split}-{i:04d}", t, x, split, info) for i, (t, x, info) in enumerate(rows)]
            start += sizes[split]
        return out

    def prompts(self, split: str) -> list[Prompt]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if self._prompts is None:
            self._prompts = self._all_prompts()
        return self._prompts[split]

    # ---------------------------------------------------------------- answers
    def _list_items(self, prompt: Prompt, ch: Chooser | None) -> list[str]:
        info = prompt.info
        allowed = [v for v in VALUES[info["attribute"]] if v != info.get("exclude")]
        if ch is None:  # the ideal answer is a fixed function of the prompt text
            return random.Random("ideal-" + prompt.text).sample(allowed, info["n"])
        return ch.sample(allowed, info["n"])

    def ideal_response(self, prompt: Prompt, ch: Chooser | None = None) -> str:
        """The answer a careful, polite, concise labeler would write (InstructGPT §3.4), without EOS."""
        info, task = prompt.info, prompt.task
        if task in ("fact", "context"):
            return statement(info["entity"], info["attribute"], info["answer"])
        if task == "list":
            return join_items(self._list_items(prompt, ch)) + " ."
        if task == "describe":
            e = self.entity(info["entity"])
            facts = [(a, e.get(a)) for a in ATTRIBUTES]
            if ch is not None:
                facts = ch.sample(facts, len(facts))
            return describe_sentences(e.name, facts, info["n_sentences"])
        if task == "yesno":
            word = "yes" if info["yes"] else "no"
            return f"{word} , " + statement(info["entity"], info["attribute"], info["answer"])
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")

    def flawed_answer(self, prompt: Prompt, ch: Chooser | random.Random,
                      mode: str | None = None) -> tuple[str, bool]:
        """An answer as found on the forum: (text, ended). `mode` in ANSWER_MODES, else drawn from answer_mix.

        Also handy for building comparison data and RM probes with known failure types.
        """
        if isinstance(ch, random.Random):
            ch = Chooser(ch)
        mode = mode or ch.weighted(self.config.answer_mix)
        if mode not in ANSWER_MODES:
            raise ValueError(f"unknown answer mode {mode!r}; valid: {', '.join(ANSWER_MODES)}")
        ideal = self.ideal_response(prompt, ch)
        if mode == "correct":
            return ch.weighted(POLITE_PREFIXES) + ideal, True
        if mode == "wrong":
            return self._wrong_answer(prompt, ch), True
        if mode == "rude":
            if ch.bernoulli(0.5):
                return ch.choice(RUDE_PREFIXES) + ideal, True
            return ideal + ch.choice(RUDE_SUFFIXES), True
        if mode == "rambling":
            return " ".join([ideal] * ch.randint(2, 4)), True
        if mode == "off_topic":
            if prompt.task != "list" and ch.bernoulli(0.5):
                others = [e for e in self.entities if e.name != prompt.info.get("entity")]
                e, a = ch.choice(others), ch.choice(ATTRIBUTES)
                return statement(e.name, a, e.get(a)), True
            return ch.choice(OFF_TOPIC), True
        # endless: the answer, then an unrelated stream of sentences and no end-of-text token
        return " ".join([ideal] + [self._fact_sentence(ch) for _ in range(ch.randint(6, 14))]), False

    def _wrong_answer(self, prompt: Prompt, ch: Chooser) -> str:
        info, task = prompt.info, prompt.task
        if task in ("fact", "context"):
            a = info["attribute"]
            wrong = ch.choice([v for v in VALUES[a] if v != info["answer"]])
            return statement(info["entity"], a, wrong)
        if task == "yesno":
            a, e = info["attribute"], info["entity"]
            if info["yes"]:
                return "no , " + statement(e, a, ch.choice([v for v in VALUES[a] if v != info["answer"]]))
            return "yes , " + statement(e, a, info["asked"])
        if task == "list":  # the wrong number of items
            allowed = [v for v in VALUES[info["attribute"]] if v != info.get("exclude")]
            n = ch.choice([k for k in range(1, 5) if k != info["n"]])
            return join_items(ch.sample(allowed, n)) + " ."
        # describe: a wrong fact or the wrong number of sentences
        e = self.entity(info["entity"])
        facts = ch.sample([(a, e.get(a)) for a in ATTRIBUTES], 3)
        if ch.bernoulli(0.5):
            a, v = facts[0]
            facts[0] = (a, ch.choice([w for w in VALUES[a] if w != v]))
            return describe_sentences(e.name, facts, info["n_sentences"])
        return describe_sentences(e.name, facts, ch.choice([k for k in (1, 2, 3) if k != info["n_sentences"]]))

    # ---------------------------------------------------------------- SFT data
    def demonstrations(self, fraction: float | None = None) -> list[Demonstration]:
        """Ideal answers for a seeded subset of TRAIN prompts (InstructGPT §3.5: the SFT dataset)."""
        fraction = self.config.demo_fraction if fraction is None else fraction
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction} must be between 0 and 1")
        train = self.prompts("train")
        order = list(range(len(train)))
        self._rng("demonstrations").shuffle(order)
        chosen = sorted(order[:round(fraction * len(train))])
        return [Demonstration(train[i], self.ideal_response(train[i])) for i in chosen]

    # ---------------------------------------------------------------- episodes for the GPT-2 / GPT-3 slides
    def icl_episode(self, rng: random.Random, n_shots: int) -> tuple[str, str, list[str]]:
        """GPT-3 few-shot: (prompt_text, answer, candidates) in the pattern-document format.

        prompt_text ends with the query key; the model should continue with ' ' + answer. With k shots the query's
        mapping was shown with probability 1 - (3/4)^k; with 0 shots accuracy is chance (1/8).
        """
        if n_shots < 0:
            raise ValueError(f"n_shots={n_shots} must be >= 0")
        return self._pattern(Chooser(rng), n_shots)

    def zero_shot_episode(self, rng: random.Random, kind: str | None = None) -> tuple[str, str, list[str]]:
        """GPT-2 zero-shot fact completion: ('bobo lives in a', 'cave', the 8 homes). kind: an attribute."""
        kind = kind or rng.choice(ATTRIBUTES)
        if kind not in ATTRIBUTES:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(ATTRIBUTES)}")
        e = rng.choice(self.entities)
        return ZERO_SHOT_TEMPLATES[kind].format(e=e.name), e.get(kind), list(VALUES[kind])


def default_world() -> World:
    return World(WorldConfig())


def corpus_stats(docs: list[Document]) -> dict:
    """Size of a corpus and its entropy floor per whitespace-separated word."""
    words = sum(len(d.text.split()) for d in docs)
    nats = sum(d.nats for d in docs)
    return {"documents": len(docs), "chars": sum(len(d.text) for d in docs), "words": words,
            "nats": nats, "nats_per_word": nats / max(words, 1)}


# ----------------------------------------------------------------------------------------------------
# Files: readable JSONL under data/world/
# ----------------------------------------------------------------------------------------------------

def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_world_files(world: World, folder: str | Path = "data/world") -> dict[str, int]:
    """Write entities.json, corpus.jsonl, prompts_{split}.jsonl, demonstrations.jsonl; return bytes per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entities.json").write_text(json.dumps(
        {"config": asdict(world.config), "entities": [asdict(e) for e in world.entities]}, indent=1) + "\n")
    _write_jsonl(folder / "corpus.jsonl", ({"text": d.text, "nats": round(d.nats, 4)} for d in world.corpus()))
    for split in SPLITS:
        _write_jsonl(folder / f"prompts_{split}.jsonl", (asdict(p) for p in world.prompts(split)))
    _write_jsonl(folder / "demonstrations.jsonl",
                 ({"prompt": asdict(d.prompt), "response": d.response} for d in world.demonstrations()))
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def _read_jsonl(path: Path, check) -> list:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist; run `python -m minirlhf data` to generate the world files")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(check(json.loads(line)))
            except (ValueError, TypeError, KeyError) as err:
                raise ValueError(f"{path}, line {lineno}: malformed record ({err}); "
                                 f"regenerate with `python -m minirlhf data`") from None
    return rows


def _need(row, key: str, kind):
    if not isinstance(row, dict):
        raise TypeError("expected a JSON object")
    if key not in row:
        raise KeyError(f"missing field {key!r}")
    if not isinstance(row[key], kind) or isinstance(row[key], bool) and kind is not bool:
        raise TypeError(f"field {key!r} should be {getattr(kind, '__name__', kind)}")
    return row[key]


def _document(row) -> Document:
    return Document(_need(row, "text", str), float(_need(row, "nats", (int, float))))


def _prompt(row) -> Prompt:
    p = Prompt(*(_need(row, k, str) for k in ("id", "task", "text", "split")), _need(row, "info", dict))
    if p.task not in TASKS:
        raise ValueError(f"unknown task {p.task!r}")
    if p.split not in SPLITS:
        raise ValueError(f"unknown split {p.split!r}")
    return p


def _demonstration(row) -> Demonstration:
    return Demonstration(_prompt(_need(row, "prompt", dict)), _need(row, "response", str))


def load_corpus(folder: str | Path = "data/world") -> list[Document]:
    return _read_jsonl(Path(folder) / "corpus.jsonl", _document)


def load_prompts(folder: str | Path = "data/world", split: str = "train") -> list[Prompt]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return _read_jsonl(Path(folder) / f"prompts_{split}.jsonl", _prompt)


def load_demonstrations(folder: str | Path = "data/world") -> list[Demonstration]:
    return _read_jsonl(Path(folder) / "demonstrations.jsonl", _demonstration)


def load_entities(folder: str | Path = "data/world") -> list[Entity]:
    path = Path(folder) / "entities.json"
    try:
        data = json.loads(path.read_text())
        return [Entity(*(_need(r, k, str) for k in ("name", *ATTRIBUTES))) for r in data["entities"]]
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; run `python -m minirlhf data`") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: malformed entities file ({err}); regenerate with `python -m minirlhf data`") from None


def __getattr__(name: str):
    """Re-export the gold labeler (it lives in minirlhf/gold.py, which imports this module)."""
    if name in ("GoldScore", "gold_score", "NoisyRanker", "agreement_ceiling", "DEFAULT_TEMPERATURE", "WEIGHTS"):
        from minirlhf import gold
        return getattr(gold, name)
    raise AttributeError(f"module 'minirlhf.world' has no attribute {name!r}")
