"""The toy world: the simulated internet the course trains on, and the simulated labelers that judge it.

Everything a language model learns in this course is generated here, from one seed:

* the *pre-training corpus* ("the internet", GPT-2 §2.1 WebText at toy scale): fact sentences, short
  stories, forum Q&A threads in the chat format whose answers are realistically flawed (wrong, rude,
  rambling, off-topic, never ending), and repetition (loops, lookups, copies, pattern games, attribute
  lists) that grows the induction head in-context learning runs on (GPT-3 §2), one mix per curriculum phase;
* the *instruction prompts* (InstructGPT §3.2, the "API prompt distribution") split into train/val/test,
  some of them the second turn of a conversation (a history the answer depends on), and *demonstrations*
  of mixed completeness for 40 % of the training prompts (the SFT data, §3.5);
* episodes for the GPT-2 zero-shot and GPT-3 few-shot slides.

Everything a model is judged by lives here too: a programmatic *gold labeler* that plays InstructGPT's human
raters (helpful, honest, harmless, well-formed, §3.4), and a *noisy ranker* that plays their disagreement.

    vocab.py      attributes, values, templates, rude words: the words the generator and the labeler share
    records.py    Entity, Document, Prompt (with its conversation history), Demonstration
    chooser.py    Chooser: a random.Random that counts the nats of every choice (the entropy floor)
    generate.py   WorldConfig, World, default_world, corpus_stats
    corpus.py     the pre-training documents by kind (Corpus, CorpusMix: one mix per curriculum phase)
    files.py      write_world_files and the load_... readers of data/world/
    gold.py       gold_score, GoldScore, WEIGHTS, NoisyRanker, agreement_ceiling

The world's names are re-exported here: `from minirlhf.world import World, Prompt, load_prompts`. The labeler
has one path, its own module: `from minirlhf.world.gold import gold_score`. It imports only the vocabulary
and the records, never the generator, so the world and its judge do not import each other.
"""

from minirlhf.world.chooser import Chooser
from minirlhf.world.files import (
    load_corpus,
    load_demonstrations,
    load_entities,
    load_prompts,
    write_world_files,
)
from minirlhf.world.generate import (
    World,
    WorldConfig,
    corpus_stats,
    default_world,
)
from minirlhf.world.records import (
    Demonstration,
    Document,
    Entity,
    Prompt,
)
from minirlhf.world.vocab import (
    ABOUT_TEMPLATES,
    ANSWER_MODES,
    ATTRIBUTES,
    CONSONANTS,
    CONTEXT_PREFIXES,
    DESCRIBE_TEMPLATES,
    DOC_KINDS,
    FACT_TEMPLATES,
    LIST_TEMPLATES,
    NUMBER_WORDS,
    OFF_TOPIC,
    PATTERN_HEADER,
    PLURAL,
    POLITE_PREFIXES,
    PREDICATE,
    QUESTION_TEMPLATES,
    RESERVED_WORDS,
    RUDE_PREFIXES,
    RUDE_SUFFIXES,
    RUDE_WORDS,
    SONG_HEADER,
    SPLITS,
    STORY_DETAILS,
    STORY_ENDINGS,
    STORY_MEETINGS,
    STORY_OPENINGS,
    TASKS,
    VALUE_ATTRIBUTE,
    VALUES,
    VOWELS,
    YESNO_TEMPLATES,
    ZERO_SHOT_TEMPLATES,
    describe_sentences,
    join_items,
    looks_like_name,
    statement,
)

__all__ = [
    "ABOUT_TEMPLATES", "ANSWER_MODES", "ATTRIBUTES", "CONSONANTS", "CONTEXT_PREFIXES", "DESCRIBE_TEMPLATES", "DOC_KINDS",
    "FACT_TEMPLATES", "LIST_TEMPLATES", "NUMBER_WORDS", "OFF_TOPIC", "PATTERN_HEADER", "PLURAL",
    "POLITE_PREFIXES", "PREDICATE", "QUESTION_TEMPLATES", "RESERVED_WORDS", "RUDE_PREFIXES", "RUDE_SUFFIXES",
    "RUDE_WORDS", "SONG_HEADER", "SPLITS", "STORY_DETAILS", "STORY_ENDINGS", "STORY_MEETINGS",
    "STORY_OPENINGS", "TASKS", "VALUE_ATTRIBUTE", "VALUES", "VOWELS", "YESNO_TEMPLATES",
    "ZERO_SHOT_TEMPLATES", "describe_sentences", "looks_like_name", "join_items", "statement", "Demonstration", "Document",
    "Entity", "Prompt", "Chooser", "World", "WorldConfig", "corpus_stats", "default_world", "load_corpus",
    "load_demonstrations", "load_entities", "load_prompts", "write_world_files"
]
