"""The toy world on disk: readable JSONL files under data/world/, and loaders that check every record."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from minirlhf.world.generate import World
from minirlhf.world.records import Demonstration, Document, Entity, Prompt
from minirlhf.world.vocab import ATTRIBUTES, SPLITS, TASKS


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


CORPUS_SAMPLE = 2_000   # documents in corpus.jsonl: a readable sample, small enough to ship (the stream is generated)


def write_world_files(world: World, folder: str | Path = "data/world",
                      corpus_sample: int = CORPUS_SAMPLE) -> dict[str, int]:
    """Write entities.json, corpus.jsonl, prompts_{split}.jsonl, demonstrations.jsonl; return bytes per file.

    corpus.jsonl holds the first `corpus_sample` documents of world.corpus() (all of them if it has fewer): text to
    read, not what anything trains on (pre-training and the tokenizer generate theirs, world/corpus.py)."""
    if isinstance(corpus_sample, bool) or not isinstance(corpus_sample, int) or corpus_sample < 1:
        raise ValueError(f"corpus_sample={corpus_sample!r}: give the number of documents to write, an integer >= 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entities.json").write_text(json.dumps(
        {"config": asdict(world.config), "entities": [asdict(e) for e in world.entities]}, indent=1) + "\n")
    sample = world.corpus(min(corpus_sample, world.config.n_documents))
    _write_jsonl(folder / "corpus.jsonl", ({"text": d.text, "nats": round(d.nats, 4)} for d in sample))
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


def _history(row) -> list:
    """The optional earlier turns: a list of [user, assistant] string pairs (absent in single-turn prompts)."""
    history = row.get("history", [])
    if not isinstance(history, list) or not all(
            isinstance(turn, list) and len(turn) == 2 and all(isinstance(x, str) for x in turn) for turn in history):
        raise TypeError("field 'history' should be a list of [user, assistant] string pairs")
    return history


def _prompt(row) -> Prompt:
    p = Prompt(*(_need(row, k, str) for k in ("id", "task", "text", "split")), _need(row, "info", dict),
               _history(row))
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

