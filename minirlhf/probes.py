"""Probing the reward model per failure type: where is r_θ blind?

Pairwise accuracy on held-out comparisons is one number, and it can look fine while the reward model
prefers, say, an answer without its end token to the same answer with it. PPO maximises r_θ, so it finds such
blind spots and exploits them (InstructGPT §4.1 reports the RM being over-optimised; docs/calibration.md
records a prototype RM at 0.93 pairwise accuracy that liked repetitions and missing EOS). So for held-out
prompts we pair the ideal response (`world.ideal_response`) with a copy broken in ONE way, and count how often
r(good) > r(bad):

    wrong_fact   the answer's fact swapped for another value of the same attribute (not for list prompts)
    rude         a rude phrase from the world's RUDE_PREFIXES / RUDE_SUFFIXES added
    repeated     the last sentence said twice
    unended      the same text without the end-of-text token (ended=False)
    off_topic    the ideal answer to another prompt (another task, another creature)

Only pairs that the gold labeler itself orders good > bad are kept, so 1.0 is always the right answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import NamedTuple

from minirlhf.reward import score_responses
from minirlhf.world import RUDE_PREFIXES, RUDE_SUFFIXES, VALUE_ATTRIBUTE, VALUES, Prompt
from minirlhf.world.gold import gold_score

FAILURE_TYPES = ("wrong_fact", "rude", "repeated", "unended", "off_topic")


class ProbePair(NamedTuple):
    prompt: Prompt
    good: str          # the ideal response
    good_ended: bool
    bad: str           # the same response, broken one way
    bad_ended: bool


def _wrong_fact(ideal: str, rng: random.Random) -> str | None:
    """Swap the last value word ("red", "cave", ...) for another value of its attribute; None if there is none."""
    words = ideal.split(" ")
    spots = [i for i, w in enumerate(words) if w in VALUE_ATTRIBUTE]
    if not spots:
        return None
    i = spots[-1]
    words[i] = rng.choice([v for v in VALUES[VALUE_ATTRIBUTE[words[i]]] if v != words[i]])
    return " ".join(words)


def _rude(ideal: str, rng: random.Random) -> str:
    return rng.choice(RUDE_PREFIXES) + ideal if rng.random() < 0.5 else ideal + rng.choice(RUDE_SUFFIXES)


def _repeated(ideal: str) -> str:
    sentences = re.findall(r"[^.!?]+[.!?]", ideal)  # world text: "bobo likes red . bobo eats figs ."
    return ideal + " " + (sentences[-1].strip() if sentences else ideal)


def _off_topic(world, prompt: Prompt, prompts: Sequence[Prompt], rng: random.Random) -> str | None:
    others = [p for p in prompts if p.task != prompt.task and p.info.get("entity") != prompt.info.get("entity")]
    return world.ideal_response(rng.choice(others)) if others else None


def probe_pairs(world, prompts: Sequence[Prompt], seed: int = 0) -> dict[str, list[ProbePair]]:
    """{failure type: [ProbePair(prompt, good, good_ended, bad, bad_ended), ...]} for held-out prompts."""
    if len(prompts) == 0:
        raise ValueError("no prompts to probe with; pass held-out prompts, e.g. world.prompts('val')")
    rng = random.Random(seed)
    pairs = {kind: [] for kind in FAILURE_TYPES}
    for prompt in prompts:
        ideal = world.ideal_response(prompt)
        broken = {
            "wrong_fact": (None if prompt.task == "list" else _wrong_fact(ideal, rng), True),
            "rude": (_rude(ideal, rng), True),
            "repeated": (_repeated(ideal), True),
            "unended": (ideal, False),
            "off_topic": (_off_topic(world, prompt, prompts, rng), True),
        }
        good_gold = gold_score(world, prompt, ideal, True).total
        for kind, (bad, bad_ended) in broken.items():
            if bad is not None and gold_score(world, prompt, bad, bad_ended).total < good_gold:
                pairs[kind].append(ProbePair(prompt, ideal, True, bad, bad_ended))
    return pairs


def probe_accuracy(rm, tokenizer, pairs: dict[str, list[ProbePair]]) -> dict[str, float]:
    """{failure type: fraction of its pairs with r_θ(good) > r_θ(bad)}; NaN for a type without pairs."""
    accuracy = {}
    for kind, items in pairs.items():
        if not items:
            accuracy[kind] = float("nan")
            continue
        prompts = [p.prompt for p in items]
        good = score_responses(rm, tokenizer, prompts, [p.good for p in items], [p.good_ended for p in items])
        bad = score_responses(rm, tokenizer, prompts, [p.bad for p in items], [p.bad_ended for p in items])
        accuracy[kind] = (good > bad).float().mean().item()
    return accuracy
