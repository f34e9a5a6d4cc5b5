"""The records of the toy world: creatures, documents, prompts and demonstrations (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass


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
    history: list = ()   # earlier turns, oldest first: [[user, assistant], ...]; tokenizer.chat_prompt writes them

    def __post_init__(self):  # kept in JSON's shape (lists), so a Prompt read back from a file equals the original
        self.history = [[user, assistant] for user, assistant in self.history]


@dataclass
class Demonstration:
    prompt: Prompt
    response: str  # a demonstrator's answer, without EOS (the SFT code appends it); not always the ideal one

