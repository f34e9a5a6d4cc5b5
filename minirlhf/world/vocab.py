"""The vocabulary of the toy world: attributes and values, templates, rude words, and the phrasing helpers.

Both the generator (`minirlhf.world.generate`) and the gold labeler (`minirlhf.world.gold`) read these: the
generator writes text with them, the labeler reads answers with them. Nothing here is random.
"""

from __future__ import annotations

import math
import re

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

TASKS = ("about", "describe", "list", "fact", "yesno", "context", "followup")
# about     "tell me about bobo ."                  all three facts of a world creature
# describe  "describe bobo in two sentences ."      its facts, in exactly n sentences
# list      "name two colours other than red ."    n distinct values of one attribute
# fact      "what colour does bobo like ?"          one fact of a world creature
# yesno     "does bobo eat figs ?"                  yes or no, best with the true fact
# context   "zuzu likes red and eats figs . what colour does zuzu like ?"   a NEW creature, facts in the prompt
# followup  the second turn of a context conversation: "what does zuzu eat ?", answerable only from the history
SPLITS = ("train", "val", "test")
DOC_KINDS = ("facts", "story", "forum", "pattern", "song", "loop", "lookup", "copy", "attributes")  # corpus.py
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
ABOUT_TEMPLATES = ("tell me about {e} .", "what do you know about {e} ?", "tell me everything about {e} .",
                   "can you tell me about {e} ?", "what can you tell me about {e} ?", "who is {e} ?",
                   "i want to know about {e} .", "say something about {e} .", "please tell me about {e} .",
                   "what is {e} like ?", "talk about {e} .", "give me the facts about {e} .")
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
                           *LIST_TEMPLATES, *ABOUT_TEMPLATES, *DESCRIBE_TEMPLATES, *CONTEXT_PREFIXES, *STORY_OPENINGS,
                           *STORY_MEETINGS, *[t for ts in STORY_DETAILS.values() for t in ts], *STORY_ENDINGS,
                           *[v for vs in VALUES.values() for v in vs], *NUMBER_WORDS, *PLURAL.values(),
                           "yes no and not other than sentence sentences game", *ZERO_SHOT_TEMPLATES.values()])
RESERVED_WORDS = frozenset(re.findall(r"[a-z]+", _TEMPLATE_TEXT))
NAME_SHAPE = re.compile(f"(?:[{CONSONANTS}][{VOWELS}])+[{CONSONANTS}]?")  # bobo, kika, and garbled: bob, kikal


def looks_like_name(word: str) -> bool:
    """A word shaped like a creature's name (consonant-vowel pairs, 3+ letters) that is not a template word."""
    return len(word) >= 3 and word not in RESERVED_WORDS and NAME_SHAPE.fullmatch(word) is not None


# ----------------------------------------------------------------------------------------------------
# Phrasing helpers (ideal answers and flawed forum answers use them)
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

