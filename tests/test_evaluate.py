"""evaluate.py: answers sampled in batches, stacked back into one padded batch, score like answers alone."""

import pytest
import torch

from minirlhf import evaluate as ev
from minirlhf.world import World, WorldConfig


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig())


def test_answers_sampled_in_batches_keep_their_log_probabilities(world, tiny_model, tiny_tokenizer):
    prompts = world.prompts("test")[:11]                 # batches of 4, 4 and 3, prompts of different lengths
    samples = ev.sample_answers(tiny_model, tiny_tokenizer, world, prompts, 1.0, 6, seed=5, batch_size=4)
    assert len(samples.texts) == len(samples.gold) == samples.sequences.size(0) == 11
    again = ev.sample_answers(tiny_model, tiny_tokenizer, world, prompts, 1.0, 6, seed=5, batch_size=4)
    assert again.texts == samples.texts                   # same seed and batch size: the same answers
    stacked = ev.answer_logprobs(tiny_model, samples, batch_size=3)
    for i in range(11):                                   # each row alone, without the other rows' padding
        mask = samples.attention_mask[i].bool()
        P = samples.prompt_length - int((~mask[:samples.prompt_length]).sum())
        seq = samples.sequences[i][mask].unsqueeze(0)
        alone = ev.Samples([prompts[i]], [samples.texts[i]], [samples.ended[i]], [samples.lengths[i]],
                           [samples.gold[i]], seq, torch.ones_like(seq), P)
        assert torch.allclose(stacked[i], ev.answer_logprobs(tiny_model, alone), atol=1e-4)
        assert samples.lengths[i] == int(mask[samples.prompt_length:].sum())


def test_sample_answers_refuses_an_empty_batch_size(world, tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        ev.sample_answers(tiny_model, tiny_tokenizer, world, world.prompts("test")[:2], batch_size=0)
