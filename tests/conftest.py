"""Shared fixtures: hermetic, tiny, built in-process (no files from data/ needed)."""

import pytest
import torch

torch.set_num_threads(2)

SENTENCES = [
    "bobo likes red .", "kiki eats plums .", "mila lives in a cave .", "what colour does bobo like ?",
    "name two foods .", "red and blue .", "tell me about kiki .", "kiki likes green . kiki lives in a barn .",
    "ugh , stupid question .", "game : bobo -> red ; kiki -> blue ;",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from minirlhf.tokenizer import train_tokenizer

    return train_tokenizer(SENTENCES, vocab_size=300)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    from minirlhf.model import GPT, get_config

    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=len(tiny_tokenizer))).eval()
