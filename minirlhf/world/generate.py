"""The generator of the toy world: creatures, the pre-training corpus, the prompts and the demonstrations.

Every random choice the generator makes goes through `Chooser`, which adds up -log p of each choice, so
every `Document` knows how many nats of randomness it holds. Because the text is (as far as reasonable)
an injective function of those choices, sum(nats) / sum(tokens) is the corpus's entropy floor: the lowest
loss per token a perfect model that knows every world fact could reach.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from minirlhf.world.chooser import Chooser
from minirlhf.world.records import Demonstration, Document, Entity, Prompt
from minirlhf.world.vocab import (
    ABOUT_TEMPLATES,
    ANSWER_MODES,
    ATTRIBUTES,
    CONSONANTS,
    CONTEXT_PREFIXES,
    DESCRIBE_TEMPLATES,
    FACT_TEMPLATES,
    LIST_TEMPLATES,
    NUMBER_WORDS,
    OFF_TOPIC,
    PLURAL,
    POLITE_PREFIXES,
    PREDICATE,
    QUESTION_TEMPLATES,
    RESERVED_WORDS,
    RUDE_PREFIXES,
    RUDE_SUFFIXES,
    SPLITS,
    TASKS,
    VALUES,
    VOWELS,
    YESNO_TEMPLATES,
    ZERO_SHOT_TEMPLATES,
    describe_sentences,
    join_items,
    statement,
)


@dataclass
class WorldConfig:
    seed: int = 0                    # everything below is a deterministic function of this seed
    n_entities: int = 30             # creatures with a name, a favourite colour, a food and a home
    n_documents: int = 14_000        # documents of corpus() (the final mix; the shipped sample, the tokenizer's
    # training text); pre-training reads a fresh stream of ~160,000 documents generated on the fly (world/corpus.py)
    answer_mix: dict = field(default_factory=lambda: {  # how forum answers go wrong (the model is NOT aligned):
        # one in four is what the asker wanted, the rest is the internet (docs/calibration.md: at .35 the prompted
        # pre-trained model's complete answers beat SFT's average demonstrator on a third of the "about" prompts)
        "correct": 0.25, "wrong": 0.15, "rude": 0.15, "rambling": 0.18, "off_topic": 0.13, "endless": 0.14})
    two_turn_prob: float = 0.25      # forum threads with a second, unrelated question
    n_prompts: dict = field(default_factory=lambda: {"train": 600, "val": 100, "test": 150})
    task_mix: dict = field(default_factory=lambda: {  # open tasks dominate, as in InstructGPT's API prompts
        # (generation .46, brainstorming .11, chat .08; closed QA .03, classification .04): about/describe/list .76;
        # closed ones (fact, yes/no, context) .16, where SFT is at the ceiling; chat (second turns) .08
        "about": 0.40, "describe": 0.20, "list": 0.16, "fact": 0.06, "yesno": 0.04,
        "context": 0.06, "followup": 0.08})   # context + followup supply facts in the conversation
    demo_fraction: float = 0.40      # share of TRAIN prompts with a demonstration (InstructGPT: ~13k of ~50k)
    demo_facts: dict = field(default_factory=lambda: {1: 0.4, 2: 0.4, 3: 0.2})  # facts an about/describe
    # demonstrator states: demonstrators differ in thoroughness, SFT imitates their average (not the best one)
    bare_yesno: float = 0.30         # share of yes/no demonstrations that say only "yes ." or "no ."
    pattern_keys: int = 4            # keys per pattern document / ICL episode (mapping: key -> colour)
    pattern_lines: tuple = (16, 24)  # lines per pattern document (inclusive range)



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

    # ---------------------------------------------------------------- pre-training corpus (world/corpus.py)
    def corpus(self, n_documents: int | None = None, phase: str = "final") -> list[Document]:
        """The first n documents of a corpus phase (default: n_documents of the final mix; see world/corpus.py).

        Document i depends only on (seed, phase, i): corpus(100) is a prefix of corpus().
        """
        from minirlhf.world.corpus import Corpus

        n = self.config.n_documents if n_documents is None else n_documents
        return Corpus(self).documents(phase, n)

    def _fact_sentence(self, ch: Chooser) -> str:
        e = ch.choice(self.entities)
        a = ch.choice(ATTRIBUTES)
        return statement(e.name, a, e.get(a), ch.randint(0, len(FACT_TEMPLATES[a]) - 1))

    def forum_thread(self, ch: Chooser, held_out: set[str]) -> str:
        """A Q&A thread in the chat format: <|user|>q\\n<|assistant|>a<|endoftext|>, sometimes more turns.

        Answers are flawed as on a real forum (config.answer_mix). A `followup` thread is one conversation: the
        first question supplies facts about a new creature, the second asks another of them, so only the first
        turn answers it. Other threads sometimes go on with an unrelated question (config.two_turn_prob).
        `held_out`: user messages that must never appear (held_out_texts(): val/test prompts stay off the internet).
        """
        questions = self._thread_questions(self._forum_prompt(ch, held_out))
        turns = []
        while questions:
            prompt = questions.pop(0)
            answer, ended = self.flawed_answer(prompt, ch)
            turns.append(f"<|user|>{prompt.text}\n<|assistant|>{answer}" + ("<|endoftext|>" if ended else ""))
            if not ended:
                break
            if not questions and len(turns) == 1 and ch.bernoulli(self.config.two_turn_prob):
                questions = self._thread_questions(self._forum_prompt(ch, held_out))
        return "\n".join(turns)

    def _forum_prompt(self, ch: Chooser, held_out: set[str]) -> Prompt:
        while True:
            task = ch.weighted(self.config.task_mix)
            text, info, history = self._make_prompt(ch, task)
            if not {text, *(user for user, _ in history)} & held_out:  # keep val/test prompts off "the internet"
                return Prompt("forum", task, text, "forum", info, history)

    def _thread_questions(self, prompt: Prompt) -> list[Prompt]:
        """The user turns of a conversation: [prompt], or [its first turn, prompt] for a follow-up."""
        return [self.first_turn(prompt), prompt] if prompt.history else [prompt]

    def held_out_texts(self) -> set[str]:
        """Every user message of the val and test conversations (history included): the corpus must not hold them."""
        return {text for s in ("val", "test") for p in self.prompts(s)
                for text in (p.text, *(user for user, _ in p.history))}

    # ---------------------------------------------------------------- prompts
    def _make_prompt(self, ch: Chooser, task: str) -> tuple[str, dict, tuple]:
        """(user message, info for the gold labeler, history of earlier (user, assistant) turns) of one prompt."""
        if task == "about":
            e = ch.choice(self.entities)
            return ch.choice(ABOUT_TEMPLATES).format(e=e.name), {"entity": e.name}, ()
        if task == "fact":
            e, a = ch.choice(self.entities), ch.choice(ATTRIBUTES)
            text = ch.choice(QUESTION_TEMPLATES[a]).format(e=e.name)
            return text, {"entity": e.name, "attribute": a, "answer": e.get(a)}, ()
        if task == "context":
            return *self._context_prompt(ch), ()
        if task == "followup":  # turn 1 is a context prompt, answered; turn 2 asks another supplied fact
            first, info = self._context_prompt(ch)
            name, asked_before = info["entity"], info["attribute"]
            asked = ch.choice([a for a in info["facts"] if a != asked_before])
            text = ch.choice(QUESTION_TEMPLATES[asked]).format(e=name)
            history = ((first, statement(name, asked_before, info["answer"])),)
            info = {**info, "attribute": asked, "answer": info["facts"][asked], "asked_before": asked_before}
            return text, info, history
        if task == "list":
            a, n = ch.choice(ATTRIBUTES), ch.randint(1, 4)
            exclude = ch.choice(VALUES[a]) if ch.bernoulli(0.4) else None
            noun = a if n == 1 else PLURAL[a]
            x = f" other than {exclude}" if exclude else ""
            text = ch.choice(LIST_TEMPLATES).format(n=NUMBER_WORDS[n], c=noun, x=x)
            return text, {"attribute": a, "n": n, "exclude": exclude}, ()
        if task == "describe":
            e, n = ch.choice(self.entities), ch.randint(1, 3)
            s = "sentence" if n == 1 else "sentences"
            text = ch.choice(DESCRIBE_TEMPLATES).format(e=e.name, n=NUMBER_WORDS[n], s=s)
            return text, {"entity": e.name, "n_sentences": n}, ()
        if task == "yesno":
            e, a = ch.choice(self.entities), ch.choice(ATTRIBUTES)
            truth = e.get(a)
            asked = truth if ch.bernoulli(0.5) else ch.choice([v for v in VALUES[a] if v != truth])
            text = YESNO_TEMPLATES[a].format(e=e.name, v=asked)
            return text, {"entity": e.name, "attribute": a, "asked": asked, "answer": truth,
                          "yes": asked == truth}, ()
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")

    def _context_prompt(self, ch: Chooser) -> tuple[str, dict]:
        """Facts about a NEW creature, then a question about one of them: only the prompt can answer it."""
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

    def _all_prompts(self) -> dict[str, list[Prompt]]:
        """Generate every split at once; no user message appears in two prompts, so none is in two splits."""
        ch = Chooser(self._rng("prompts"))
        sizes = self.config.n_prompts
        total = sum(sizes.values())
        quota = {t: round(p * total) for t, p in self.config.task_mix.items()}
        seen: set[str] = set()
        pool: list[tuple[str, str, dict, tuple]] = []
        for task, q in quota.items():
            made, attempts = 0, 0
            while made < q:
                attempts += 1
                if attempts > 200 * q + 1000:
                    raise ValueError(f"could not make {q} distinct {task!r} prompts; lower n_prompts or "
                                     f"raise n_entities (now {self.config.n_entities})")
                text, info, history = self._make_prompt(ch, task)
                users = {text, *(user for user, _ in history)}
                if not users & seen:
                    seen |= users
                    pool.append((task, text, info, history))
                    made += 1
        ch.rng.shuffle(pool)
        out, start = {}, 0
        for split in SPLITS:
            rows = pool[start:start + sizes[split]]
            out[split] = [Prompt(f"{split}-{i:04d}", t, x, split, info, h) for i, (t, x, info, h) in enumerate(rows)]
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
        """The answer the best demonstrator writes: complete, true, polite, concise (InstructGPT §3.4), without EOS.

        The gold labeler measures concision against its length. With `ch`, the facts come in a random order.
        """
        info, task = prompt.info, prompt.task
        if task in ("fact", "context", "followup"):
            return statement(info["entity"], info["attribute"], info["answer"])
        if task == "list":
            return join_items(self._list_items(prompt, ch)) + " ."
        if task in ("about", "describe"):  # every fact: "bobo likes red , eats figs and lives in a cave ."
            e = self.entity(info["entity"])
            facts = [(a, e.get(a)) for a in ATTRIBUTES]
            if ch is not None:
                facts = ch.sample(facts, len(facts))
            return describe_sentences(e.name, facts, info.get("n_sentences", 1))
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
        if task in ("fact", "context", "followup"):
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
        # about / describe: a wrong fact, or (describe) the wrong number of sentences
        e, n = self.entity(info["entity"]), info.get("n_sentences", 1)
        facts = ch.sample([(a, e.get(a)) for a in ATTRIBUTES], 3)
        if task == "about" or ch.bernoulli(0.5):
            a, v = facts[0]
            facts[0] = (a, ch.choice([w for w in VALUES[a] if w != v]))
            return describe_sentences(e.name, facts, n)
        return describe_sentences(e.name, facts, ch.choice([k for k in (1, 2, 3) if k != n]))

    # ---------------------------------------------------------------- conversations
    def first_turn(self, prompt: Prompt) -> Prompt:
        """The first turn of a follow-up conversation, as a `context` prompt (the facts and the first question)."""
        if not prompt.history:
            raise ValueError(f"prompt {prompt.id!r} has no history: it is its own first turn")
        info = {**prompt.info, "attribute": prompt.info["asked_before"],
                "answer": prompt.info["facts"][prompt.info["asked_before"]]}
        info.pop("asked_before")
        return Prompt(prompt.id + "-turn1", "context", prompt.history[0][0], prompt.split, info)

    def follow_ups(self, prompt: Prompt) -> tuple[Prompt, list[Prompt]]:
        """(turn 1, follow-ups) of a conversation that supplies facts about a new creature.

        Turn 1 is the `context` prompt (for a `followup` prompt: its first turn). Each follow-up asks one supplied
        fact that turn 1 did not ask, with turn 1 and its ideal answer as history: only the history answers it.
        Other tasks have no follow-ups: (prompt, []).
        """
        if prompt.task not in ("context", "followup"):
            return prompt, []
        first = self.first_turn(prompt) if prompt.history else prompt
        info = first.info
        history = ((first.text, self.ideal_response(first)),)
        out = []
        for a in info["facts"]:
            if a == info["attribute"]:
                continue
            if prompt.history and a == prompt.info["attribute"]:
                text = prompt.text  # the conversation's own second question
            else:
                text = self._rng(f"follow-up-{prompt.id}-{a}").choice(QUESTION_TEMPLATES[a]).format(e=info["entity"])
            out.append(Prompt(f"{first.id}-{a}", "followup", text, prompt.split,
                              {**info, "attribute": a, "answer": info["facts"][a], "asked_before": info["attribute"]},
                              history))
        return first, out

    # ---------------------------------------------------------------- SFT data
    def demonstrations(self, fraction: float | None = None) -> list[Demonstration]:
        """Demonstrators' answers for a seeded subset of TRAIN prompts (InstructGPT §3.5: the SFT dataset).

        Demonstrators differ in thoroughness: SFT learns their average, while the gold labeler knows what the
        best one writes (`ideal_response`). That gap is what comparisons, the reward model and PPO can close.
        """
        fraction = self.config.demo_fraction if fraction is None else fraction
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction={fraction} must be between 0 and 1")
        train = self.prompts("train")
        order = list(range(len(train)))
        self._rng("demonstrations").shuffle(order)
        chosen = sorted(order[:round(fraction * len(train))])
        ch = Chooser(self._rng("demonstrators"))
        return [Demonstration(train[i], self.demonstration_response(train[i], ch)) for i in chosen]

    def demonstration_response(self, prompt: Prompt, ch: Chooser) -> str:
        """One demonstrator's answer: true and polite, but not always complete (mixed completeness).

        about / describe: 1, 2 or 3 of the creature's facts (config.demo_facts; at least one per asked sentence);
        yes/no: a bare "yes ." or "no ." with probability config.bare_yesno; other tasks: the ideal answer.
        """
        info, task = prompt.info, prompt.task
        if task in ("about", "describe"):
            e, n = self.entity(info["entity"]), info.get("n_sentences", 1)
            k = max(n, ch.weighted(self.config.demo_facts))
            return describe_sentences(e.name, ch.sample([(a, e.get(a)) for a in ATTRIBUTES], k), n)
        if task == "yesno" and ch.bernoulli(self.config.bare_yesno):
            return ("yes" if info["yes"] else "no") + " ."
        return self.ideal_response(prompt)

    # ---------------------------------------------------------------- episodes for the GPT-2 / GPT-3 slides
    def icl_episode(self, rng: random.Random, n_shots: int) -> tuple[str, str, list[str]]:
        """GPT-3 few-shot: (prompt_text, answer, candidates) in the pattern-document format.

        prompt_text ends with the query key; the model should continue with ' ' + answer. With k shots the query's
        mapping was shown with probability 1 - (3/4)^k; with 0 shots accuracy is chance (1/8).
        """
        from minirlhf.world.corpus import pattern_episode

        if n_shots < 0:
            raise ValueError(f"n_shots={n_shots} must be >= 0")
        return pattern_episode(self, Chooser(rng), n_shots)

    def icl_task_episode(self, rng: random.Random, n_shots: int) -> tuple[str, str, list[str]]:
        """GPT-3 task recognition: ('facts :\\nbobo : red\\nkiki : pink\\ndema :', 'white', the 24 values).

        Every line is a TRUE fact of one attribute; only the shots say which attribute is asked, so with 0 shots a
        model that knows every fact is right one time in three, and from 1 shot on it can always be right.
        """
        from minirlhf.world.corpus import attribute_episode

        if n_shots < 0:
            raise ValueError(f"n_shots={n_shots} must be >= 0")
        if n_shots + 1 > len(self.entities):
            raise ValueError(f"n_shots={n_shots} needs {n_shots + 1} creatures; the world has {len(self.entities)}")
        return attribute_episode(self, Chooser(rng), n_shots)

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

