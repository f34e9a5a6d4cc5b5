"""A chat that uses its history: multi-turn prompts reach every stage, and the follow-up measurement (hermetic, ~2 s).

The models here are stubs that read the decoded prompt: a *copier* answers the last question from every fact
it can see (the history included), a *reader of the last message* only from the last user turn.
"""

import json
from dataclasses import asdict

import pytest
import torch

from minirlhf.chat import generate_responses
from minirlhf.evaluate import follow_up_accuracy
from minirlhf.model import Generation
from minirlhf.reward import encode_response
from minirlhf.sft import sft_example
from minirlhf.tokenizer import ASSISTANT, USER, encode_chat_prompt, train_tokenizer
from minirlhf.world import (
    ATTRIBUTES,
    QUESTION_TEMPLATES,
    SPLITS,
    VALUE_ATTRIBUTE,
    VALUES,
    World,
    WorldConfig,
    looks_like_name,
    statement,
)


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(n_documents=10))


@pytest.fixture(scope="module")
def tok(world):
    texts = [t for s in SPLITS for p in world.prompts(s) for t in (p.text, world.ideal_response(p))]
    return train_tokenizer(texts, vocab_size=400)


class StubChat(torch.nn.Module):
    """Answers "what does zuzu eat ?" with the first food it finds in what it reads, else a fixed guess."""

    def __init__(self, tokenizer, copies: bool):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # sample_answers asks for the device
        self.tokenizer, self.copies = tokenizer, copies

    def answer(self, text: str) -> str:
        last = text.split(USER)[-1].split("\n" + ASSISTANT)[0]       # the last user message
        question = last.split(" . ")[-1]                               # its last sentence
        name = next(w for w in question.split() if looks_like_name(w))
        attribute = next(a for a in ATTRIBUTES if question in [t.format(e=name) for t in QUESTION_TEMPLATES[a]])
        seen = (text if self.copies else last).rsplit(question, 1)[0]
        value = next((w for w in seen.split() if VALUE_ATTRIBUTE.get(w) == attribute), VALUES[attribute][0])
        return statement(name, attribute, value)

    def generate(self, prompts, max_new_tokens, eos_token_id=None, pad_token_id=None, **kwargs) -> Generation:
        ids = [self.tokenizer.encode(self.answer(self.tokenizer.decode(p)), add_special_tokens=False) + [eos_token_id]
               for p in prompts]
        B = len(prompts)
        return Generation(sequences=torch.zeros(B, 1, dtype=torch.long), attention_mask=torch.ones(B, 1),
                          prompt_length=1, response_ids=ids, ended=torch.ones(B, dtype=torch.bool))


def test_follow_up_accuracy_rewards_a_model_that_reads_its_history(world, tok):
    prompts = world.prompts("test")
    copier, reader = StubChat(tok, copies=True), StubChat(tok, copies=False)
    assert follow_up_accuracy(copier, tok, world, prompts, with_history=True) == 1.0
    assert follow_up_accuracy(copier, tok, world, prompts, with_history=False) < 0.35   # chance: 1/8
    assert follow_up_accuracy(reader, tok, world, prompts, with_history=True) < 0.35
    with pytest.raises(ValueError, match="context"):
        follow_up_accuracy(copier, tok, world, [p for p in prompts if p.task == "about"], with_history=True)


def test_generate_responses_sends_the_history(world, tok):
    follow = [p for p in world.prompts("train") if p.task == "followup"][:5]
    out = generate_responses(StubChat(tok, copies=True), tok, follow)
    assert [r.text for r in out] == [world.ideal_response(p) for p in follow]


def test_sft_example_trains_only_on_the_last_answer(world, tok):
    p = next(p for p in world.prompts("train") if p.task == "followup")
    ids, labels = sft_example(tok, p, world.ideal_response(p))
    prompt_ids = encode_chat_prompt(tok, p)
    assert ids[:len(prompt_ids)] == prompt_ids and prompt_ids.count(tok.convert_tokens_to_ids(ASSISTANT)) == 2
    assert all(label == -100 for label in labels[:len(prompt_ids) - 1])   # the history is context, not a target
    answer = [label for label in labels if label != -100]
    assert tok.decode(answer[:-1]) == world.ideal_response(p) and answer[-1] == tok.eos_token_id


def test_reward_model_rows_keep_the_history_of_a_stored_comparison(world, tok):
    p = next(p for p in world.prompts("train") if p.task == "followup")
    stored = json.loads(json.dumps(asdict(p)))   # a Comparison's prompt, as read back from comparisons.jsonl
    assert encode_response(tok, stored, "zuzu .", True) == encode_response(tok, p, "zuzu .", True)
    assert encode_response(tok, p, "zuzu .", True) != encode_response(tok, p.text, "zuzu .", True)
