"""Prompting measurements: the two GPT-3 curves and the induction-head scores (tiny model, seconds)."""

import pytest
import torch

from minirlhf.prompting import icl_curve, icl_task_curve, induction_scores
from minirlhf.world import World, WorldConfig


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(n_documents=10))


def test_icl_curves_have_one_accuracy_per_shot_and_the_ideal_copier(tiny_model, tiny_tokenizer, world):
    curve = icl_curve(tiny_model, tiny_tokenizer, world, shots=(0, 1, 2), n_episodes=5)
    assert curve["shots"] == [0, 1, 2] and len(curve["accuracy"]) == 3
    assert curve["ideal"] == pytest.approx([1 / 8, 0.25 + 0.75 / 8, 1 - 0.75 ** 2 + 0.75 ** 2 / 8])
    task = icl_task_curve(tiny_model, tiny_tokenizer, world, shots=(0, 1), n_episodes=5)
    assert task["shots"] == [0, 1] and all(0 <= a <= 1 for a in task["accuracy"])
    with pytest.raises(ValueError, match="n_episodes"):
        icl_task_curve(tiny_model, tiny_tokenizer, world, n_episodes=0)


def test_induction_scores_one_per_head_and_the_model_is_left_as_it_was(tiny_model):
    tiny_model.train()
    scores = induction_scores(tiny_model, length=8, n_sequences=4)
    n_layer, n_head = tiny_model.config.n_layer, tiny_model.config.n_head
    for key in ("previous_token", "induction"):
        assert len(scores[key]) == n_layer and all(len(row) == n_head for row in scores[key])
        assert all(0 <= v <= 1 for row in scores[key] for v in row)
    assert tiny_model.training and tiny_model.attn_impl == "sdpa"
    assert all(not block.attn.attn_dropout._forward_hooks for block in tiny_model.transformer.h)
    with pytest.raises(ValueError, match="context"):
        induction_scores(tiny_model, length=tiny_model.config.block_size)


def test_previous_token_score_of_uniform_attention(tiny_model):
    # with Q = K = 0 the first layer attends uniformly: weight 1/(t+1) on each of the t+1 keys position t sees
    with torch.no_grad():
        for p in tiny_model.transformer.h[0].attn.c_attn.parameters():
            p.zero_()
    scores = induction_scores(tiny_model, length=8, n_sequences=2)
    expected_previous = sum(1 / (t + 1) for t in range(1, 16)) / 15
    assert scores["previous_token"][0] == pytest.approx([expected_previous] * tiny_model.config.n_head, rel=1e-4)
