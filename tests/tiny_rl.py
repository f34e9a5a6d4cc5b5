"""A tiny world-speaking policy for the tests of DPO, GRPO/RLOO, best-of-n and the comparison (seconds to build).

A byte-level BPE and the `tiny` GPT (context 128: the world's chat prompts need it), fine-tuned on the world's
demonstrations: it answers in the world's format, badly, so the gold labeler's score has room to rise.
Built once per test session; tests train deep copies of it.
"""

import contextlib
import copy
import functools

import torch

from minirlhf.compare import GoldReward
from minirlhf.model import GPT, get_config
from minirlhf.sft import SFTConfig, train_sft
from minirlhf.tokenizer import encode_chat_prompt, train_tokenizer
from minirlhf.world import default_world


@contextlib.contextmanager
def single_thread():
    """Tiny models spend their time in per-op overhead: one thread is faster, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@functools.lru_cache(maxsize=1)
def _tiny():
    world = default_world()
    demos = world.demonstrations()
    texts = [d.text for d in world.corpus()[:300]] + [d.prompt.text + " " + d.response for d in demos]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    sft = GPT(get_config("tiny", vocab_size=len(tokenizer), block_size=128))
    sft, _ = train_sft(sft, ([(d.prompt, d.response) for d in demos], None),
                       SFTConfig(epochs=4, lr=3e-3, batch_size=16, dropout=0.0), tokenizer=tokenizer, progress=False)
    prompts = [p for p in world.prompts("train") if len(encode_chat_prompt(tokenizer, p)) <= 40][:96]
    return world, tokenizer, sft.eval().requires_grad_(False), prompts


def tiny_setup():
    """(world, tokenizer, sft, prompts, gold reward): sft frozen (copy it to train), 96 short train prompts."""
    world, tokenizer, sft, prompts = _tiny()
    return world, tokenizer, sft, prompts, GoldReward(world, prompts, tokenizer, sft.config)


def trainable(model):
    return copy.deepcopy(model).requires_grad_(True)
