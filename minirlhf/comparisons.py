"""Comparison data for the reward model: InstructGPT step 2's dataset (Ouyang et al. 2022, §3.4, §3.5, App. B).

For each prompt x, K responses y_1..y_K are sampled (the paper: K = 4..9) and a labeler ranks them best to
worst. InstructGPT drew the responses from SEVERAL models (earlier policies, the SFT model, different
sampling settings), not only from the SFT model. The toy world shows why (docs/calibration.md): K samples
from one SFT model are near-duplicates, most pairs are ties, and the reward model then learns nothing about
repetitions, rudeness or a missing end token — exactly what PPO goes on to exploit. So responses here are
spread over several policies and temperatures, and exact duplicates are resampled.

The labeler is the world's NoisyRanker: it ranks by the noise-free gold score with noise, like people who
disagree. Each record keeps the gold scores too, so we can measure what the paper could only estimate: the
labelers' own agreement ceiling (`ceiling_of`) and the reward model's accuracy against the true order.

Records are stored as JSON Lines (one comparison per line); `load_comparisons` checks every record and names
the file and line of the first bad one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minirlhf.chat import generate_responses
from minirlhf.checkpoint import write_text_atomic
from minirlhf.world.gold import NoisyRanker, agreement_ceiling, gold_score
from minirlhf.world.records import Prompt

MIN_K, MAX_K = 4, 9  # InstructGPT: "between K = 4 and K = 9 responses to rank" (§3.5)


@dataclass
class ComparisonConfig:
    """How the pipeline collects comparisons, in two rounds: InstructGPT kept collecting on its newer policies."""

    k: int = 6                                  # responses ranked per prompt (InstructGPT: 4 to 9): C(6,2) = 15 pairs
    temperatures: tuple = (0.7, 1.0, 1.3)       # every policy of a round samples at each of these
    round1_policies: tuple = ("pretrained", "sft")   # round 1: the models there are before any reward model
    round1_passes: int = 4                      # times each train prompt is sampled and ranked (600 prompts -> 2,400)
    round2_policies: tuple = ("sft", "ppo_round1", "pretrained")   # round 2 adds PPO-1, trained against RM-1
    round2_passes: int = 3                      # 600 prompts -> 1,800 comparisons
    cut_copies: int = 0                         # train comparisons: + this many cut-off copies of ended answers
    # per prompt (sample_comparisons), ranked with the rest; 0 in the course (docs/calibration.md)

    def __post_init__(self):
        if not MIN_K <= self.k <= MAX_K:
            raise ValueError(f"k={self.k}: InstructGPT ranked between {MIN_K} and {MAX_K} responses; choose k in "
                             f"{MIN_K}..{MAX_K}")
        if not 0 <= self.cut_copies <= MAX_K - self.k:
            raise ValueError(f"cut_copies={self.cut_copies}: k + cut_copies responses are ranked, at most {MAX_K}; "
                             f"choose 0..{MAX_K - self.k}")
        if self.round1_passes < 1 or self.round2_passes < 0:
            raise ValueError("round1_passes must be >= 1 and round2_passes >= 0 (0 skips round 2's sampling)")


@dataclass
class Comparison:
    """One prompt x and K responses, ranked by the labeler."""

    prompt: dict                 # the world Prompt as a dict: at least {"id": ..., "text": the user message}
    responses: list[str]         # y_1..y_K (decoded text, no special tokens)
    ended: list[bool]            # y_k finished with EOS
    ranking: list[int]           # response indices, BEST FIRST, from the noisy labeler
    gold: list[float]            # noise-free gold total of each response
    sources: list[str] = field(default_factory=list)  # which policy / temperature sampled y_k, e.g. "sft@T=1.0"
    labeler: dict = field(default_factory=dict)       # the NoisyRanker's settings, e.g. {"temperature": 1.0, "seed": 0}
    flags: dict = field(default_factory=dict)         # the labeler's metadata: {"hallucination": [0/1 per response]}

    @property
    def k(self) -> int:
        return len(self.responses)

    @property
    def prompt_text(self) -> str:
        return self.prompt["text"]


# ----------------------------------------------------------------------------------------------------------
# Sampling K responses per prompt from several policies and ranking them


def _prompt_dict(prompt) -> dict:
    if dataclasses.is_dataclass(prompt):
        return asdict(prompt)
    if isinstance(prompt, dict):
        return dict(prompt)
    raise TypeError(f"a prompt must be a world Prompt (or a dict with 'id' and 'text'), got {type(prompt).__name__}")


def _key(response: str, ended: bool) -> tuple[str, bool]:
    """Two responses are the same sequence when text and ending are the same."""
    return (response, bool(ended))


def _first_duplicates(responses: list[str], ended: list[bool]) -> list[int]:
    """Indices of responses that repeat an earlier one (by text and ending)."""
    seen, dups = set(), []
    for j, (r, e) in enumerate(zip(responses, ended)):
        if _key(r, e) in seen:
            dups.append(j)
        seen.add(_key(r, e))
    return dups


def sample_comparisons(prompts: Sequence, policies: dict, tokenizer, world, k: int = 4,
                       temperatures: Sequence[float] = (0.7, 1.0, 1.3), ranker=None, seed: int = 0,
                       max_new_tokens: int = 24, batch_size: int = 64, max_resamples: int = 3,
                       cut_copies: int = 0) -> list[Comparison]:
    """K responses per prompt, spread over policies × temperatures, ranked by the noisy labeler.

    prompts: world Prompts. policies: {"pretrained": gpt, "sft": gpt, ...}. ranker: a gold.NoisyRanker
    (default: NoisyRanker(seed=seed), the labeler at its default temperature). Response slot j of prompt i comes from the
    (policy, temperature) pair number (i·K + j) mod (#policies · #temperatures), so every source gets an equal
    share; each source generates all of its slots in batches. A response that repeats an earlier one of the same
    prompt is resampled up to `max_resamples` times; duplicates still left are dropped (that prompt then has
    fewer than K responses), and a prompt with fewer than 2 distinct responses is skipped.

    cut_copies: each prompt's answers are joined by this many copies of its ended answers cut off as a length cap
    would cut them (0 to MAX_CUT tokens before their end, no EOS; `cut_off_copies`), and the labeler ranks all
    of them. Sampled answers rarely stop at the cap, so without these the comparisons never show an answer beside
    the same answer unended: the one thing that teaches a per-token ("sum") reward model the end token.
    """
    if not isinstance(k, int) or not MIN_K <= k <= MAX_K:
        raise ValueError(f"k={k!r} responses per prompt; InstructGPT ranked between {MIN_K} and {MAX_K}: "
                         f"choose k in {MIN_K}..{MAX_K}")
    if not isinstance(cut_copies, int) or not 0 <= cut_copies <= MAX_K - k:
        raise ValueError(f"cut_copies={cut_copies!r}: k + cut_copies responses are ranked, at most {MAX_K}")
    if not policies:
        raise ValueError("no policies to sample from; pass e.g. {'pretrained': gpt, 'sft': sft_model}")
    if not temperatures or any(t <= 0 for t in temperatures):
        raise ValueError(f"temperatures must be positive (sampling, not greedy); got {tuple(temperatures)}")
    if len(prompts) == 0:
        raise ValueError("no prompts given; pass e.g. world.prompts('train')")
    ranker = ranker if ranker is not None else NoisyRanker(seed=seed)
    sources = [(name, float(t)) for name, t in itertools.product(policies, temperatures)]
    generators = {}
    for s, (name, _) in enumerate(sources):  # one seeded stream per source: reproducible, independent
        device = next(policies[name].parameters()).device
        generators[s] = torch.Generator(device=device).manual_seed(seed * 1009 + s)

    slot_source = [[(i * k + j) % len(sources) for j in range(k)] for i in range(len(prompts))]
    responses = [[""] * k for _ in prompts]
    ended = [[False] * k for _ in prompts]
    todo = [(i, j) for i in range(len(prompts)) for j in range(k)]  # slots to (re)sample
    for _ in range(1 + max_resamples):
        for s, (name, temperature) in enumerate(sources):
            slots = [(i, j) for i, j in todo if slot_source[i][j] == s]
            if not slots:
                continue
            out = generate_responses(policies[name], tokenizer, [prompts[i] for i, _ in slots],
                                     max_new_tokens=max_new_tokens, temperature=temperature,
                                     generator=generators[s], batch_size=batch_size)
            for (i, j), r in zip(slots, out):
                responses[i][j], ended[i][j] = r.text, r.ended
        todo = [(i, j) for i in range(len(prompts)) for j in _first_duplicates(responses[i], ended[i])]
        if not todo:
            break

    comparisons = []
    cut_rng = random.Random(seed)   # where the copies are cut: its own stream, so cut_copies=0 changes nothing
    for i, prompt in enumerate(prompts):
        duplicates = set(_first_duplicates(responses[i], ended[i]))
        keep = [j for j in range(k) if j not in duplicates]
        if len(keep) < 2:
            continue
        texts, ends = [responses[i][j] for j in keep], [ended[i][j] for j in keep]
        names = [f"{sources[slot_source[i][j]][0]}@T={sources[slot_source[i][j]][1]:g}" for j in keep]
        if cut_copies:
            texts, ends, names = cut_off_copies(texts, ends, names, tokenizer, cut_copies, cut_rng)
        scores = [gold_score(world, prompt, r, e) for r, e in zip(texts, ends)]
        gold = [float(s.total) for s in scores]
        comparisons.append(Comparison(
            prompt=_prompt_dict(prompt), responses=texts, ended=ends,
            ranking=[int(j) for j in ranker.rank(gold)], gold=gold,
            sources=names,
            labeler={"temperature": ranker.temperature, "seed": ranker.seed, "flag_noise": ranker.flag_noise},
            flags=ranker.flags(scores),
        ))
    return comparisons


MAX_CUT = 3   # a cut-off copy ends 0..MAX_CUT tokens before its answer did (0: the same text, without EOS)


def cut_off_copies(texts: list[str], ended: list[bool], sources: list[str], tokenizer, n: int,
                   rng: random.Random) -> tuple[list[str], list[bool], list[str]]:
    """The responses plus up to n copies of different ended answers, each cut 0..MAX_CUT tokens before its end and
    left without EOS, as a length cap would have cut it (source "<its source>+cut"). A copy that repeats a
    response already there is left out."""
    texts, ended, sources = list(texts), list(ended), list(sources)
    candidates = [j for j in range(len(texts)) if ended[j] and texts[j]]
    for j in rng.sample(candidates, min(n, len(candidates))):
        ids = tokenizer.encode(texts[j], add_special_tokens=False)
        cut = tokenizer.decode(ids[:len(ids) - rng.randint(0, min(MAX_CUT, len(ids) - 1))],
                               skip_special_tokens=True).strip()
        if (cut, False) not in set(zip(texts, ended)):
            texts.append(cut)
            ended.append(False)
            sources.append(sources[j] + "+cut")
    return texts, ended, sources


# ----------------------------------------------------------------------------------------------------------
# JSON Lines I/O with validation


def save_comparisons(path: str | os.PathLike, comparisons: Sequence[Comparison]) -> Path:
    """Write one JSON object per line, atomically (a temp file in the same folder, then os.replace)."""
    return write_text_atomic(path, "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in comparisons))


REQUIRED_FIELDS = ("prompt", "responses", "ended", "ranking", "gold", "sources", "labeler")   # and "flags", optional


def load_comparisons(path: str | os.PathLike) -> list[Comparison]:
    """Read a JSONL file written by save_comparisons; a malformed record raises ValueError naming file and line."""
    path = Path(path)
    comparisons = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are allowed (e.g. a trailing newline)
            try:
                comparisons.append(comparison_from_dict(json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {line_number}: not valid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:
                raise ValueError(f"{path} line {line_number}: {e}") from None
    if not comparisons:
        raise ValueError(f"no comparisons in {path}: the file is empty; sample some with sample_comparisons")
    return comparisons


def comparison_from_dict(record) -> Comparison:
    """Check one record (a dict from JSON) and build a Comparison; ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a comparison needs {list(REQUIRED_FIELDS)}")
    prompt, responses = record["prompt"], record["responses"]
    if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
        raise ValueError("'prompt' must be an object with a 'text' string (the user message)")
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise ValueError("'responses' must be a list of strings")
    K = len(responses)
    if K < 2:
        raise ValueError(f"K={K} responses; a comparison needs at least 2")
    _check_list(record, "ended", K, lambda v: isinstance(v, bool), "true/false")
    _check_list(record, "gold", K, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v), "numbers, finite (no NaN or Infinity)")
    _check_list(record, "sources", K, lambda v: isinstance(v, str), "strings")
    _check_list(record, "ranking", K, lambda v: isinstance(v, int) and not isinstance(v, bool), "integers")
    if sorted(record["ranking"]) != list(range(K)):
        raise ValueError(f"ranking {record['ranking']} is not a permutation of range({K}) "
                         "(each response index exactly once, best first)")
    if not isinstance(record["labeler"], dict):
        raise ValueError("'labeler' must be an object, e.g. {\"temperature\": 1.0, \"seed\": 0}")
    seen = {}
    for j, key in enumerate(zip(responses, record["ended"])):
        if key in seen:
            raise ValueError(f"responses {seen[key]} and {j} are identical ({key[0]!r}, ended={key[1]}); "
                             "a duplicate gives a tie pair the labeler could not rank: drop one of them")
        seen[key] = j
    flags = record.get("flags", {})   # files written before the labeler flagged anything have none
    if not isinstance(flags, dict):
        raise ValueError("'flags' must be an object, e.g. {\"hallucination\": [0, 1, ...]} (one mark per response)")
    for name in flags:
        _check_list(flags, name, K, lambda v: type(v) is int and v in (0, 1), "0/1 marks")
    return Comparison(prompt=prompt, responses=responses, ended=record["ended"], ranking=record["ranking"],
                      gold=[float(g) for g in record["gold"]], sources=record["sources"], labeler=record["labeler"],
                      flags=flags)


def _check_list(record: dict, name: str, K: int, ok, kind: str) -> None:
    value = record[name]
    if not isinstance(value, list) or not all(ok(v) for v in value):
        raise ValueError(f"'{name}' must be a list of {kind}")
    if len(value) != K:
        raise ValueError(f"'{name}' has {len(value)} entries but there are K={K} responses; give one per response")


# ----------------------------------------------------------------------------------------------------------
# Does the data teach what the reward model must know? Right vs wrong facts for the same prompt

FACT_TASKS = ("about", "describe", "fact", "yesno", "context", "followup")   # prompts whose answers state facts


def fact_contrast_share(comparisons: Sequence[Comparison], world) -> float:
    """Share of fact-asking comparisons that rank a TRUE fact against a WRONG one for the same prompt.

    A comparison contrasts them when, among its polite and finished responses (gold harmless, EOS produced), one
    states a fact of the asked creature truly (gold helpful > 0 and honest) and another states a wrong fact (gold
    honest = 0): the labeler's preference between those two is about the fact. Without such pairs the reward
    model has no reason to care whether a fact is true, and its wrong-fact probe stays near chance (probes.py).
    """
    contrasted = asked = 0
    for c in comparisons:
        prompt = Prompt(**c.prompt)
        if prompt.task not in FACT_TASKS:
            continue
        scores = [gold_score(world, prompt, r, e) for r, e in zip(c.responses, c.ended) if e]
        clean = [s for s in scores if s.harmless == 1]
        asked += 1
        contrasted += any(s.helpful > 0 and s.honest == 1 for s in clean) and any(s.honest == 0 for s in clean)
    return contrasted / asked if asked else float("nan")


# ----------------------------------------------------------------------------------------------------------
# How good can a reward model get? The labelers' own agreement with the true order


def ceiling_of(comparisons: Sequence[Comparison]) -> float:
    """Expected fraction of pairs where the noisy labeler agrees with the gold order, averaged over all pairs.

    A reward model that recovered the gold order exactly would agree with the stored (noisy) rankings this often:
    the ceiling for its validation accuracy vs the labels (InstructGPT's labelers agreed with each other ~73%).
    """
    if len(comparisons) == 0:
        raise ValueError("no comparisons to compute a ceiling on")
    total = pairs = 0.0
    for c in comparisons:
        temperature = c.labeler.get("temperature")
        if temperature is None:
            raise ValueError("a comparison has no labeler temperature; ceiling_of needs the labeler's settings")
        n = c.k * (c.k - 1) / 2  # C(K, 2) pairs in this record
        total += agreement_ceiling(c.gold, temperature) * n
        pairs += n
    return total / pairs
