"""Best-of-n distillation: the selection by hand, and SFT on the gold labeler's favourites raises the gold score."""

import pytest
import torch
from tiny_rl import single_thread, tiny_setup, trainable

from minirlhf import evaluate as ev
from minirlhf.distill import DistillConfig, best_of_n, train_best_of_n
from minirlhf.sft import SFTConfig


def test_best_of_n_picks_each_prompts_favourite_first_on_ties():
    scores = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2, 0.9])   # prompt 0: answers 0-2, prompt 1: answers 3-5
    assert best_of_n(scores, 3).tolist() == [1, 3]
    assert best_of_n(scores, 1).tolist() == list(range(6))  # n = 1 keeps every answer
    with pytest.raises(ValueError, match="n = 4"):
        best_of_n(scores, 4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tiny(one_thread):
    return tiny_setup()


def gold_of(model, tiny) -> float:
    world, tokenizer, _, prompts, _ = tiny
    return ev.summarize(ev.sample_answers(model, tokenizer, world, prompts * 2, 1.0, 24, seed=123))["gold"]


def run(tiny, n=8, seed=0, rounds=1, reward_model=None):
    world, tokenizer, sft, prompts, gold = tiny
    cfg = DistillConfig(n=n, rounds=rounds, max_new_tokens=16, seed=seed,
                        sft=SFTConfig(epochs=8, lr=1e-3, dropout=0.0))
    return train_best_of_n(trainable(sft), prompts, cfg, reward_model=reward_model or gold, tokenizer=tokenizer,
                           progress=False)


def test_distilling_the_gold_labelers_best_of_8_raises_the_gold_score(tiny):
    sft = tiny[2]
    policy, history = run(tiny, n=8)
    assert gold_of(policy, tiny) > gold_of(sft, tiny) + 0.05
    assert history["samples"] == [8 * 96] and history["kept"][0] <= 96
    assert history["rm_reward_best"][0] > history["rm_reward_all"][0] + 0.1   # the favourites are better
    assert not policy.training and not any(p.requires_grad for p in sft.parameters())


def test_n_equal_1_keeps_every_answer_that_ended(tiny):
    _, history = run(tiny, n=1)
    assert history["rm_reward_best"] == history["rm_reward_all"]
    assert history["kept"][0] == round(history["ended_best"][0] * 96)          # an unended answer is never kept


def test_expert_iteration_runs_rounds_from_the_new_policy(tiny):
    seen = []

    def callback(round_, stats):
        seen.append(round_)

    world, tokenizer, sft, prompts, gold = tiny
    cfg = DistillConfig(n=2, rounds=2, max_new_tokens=16, sft=SFTConfig(epochs=1, lr=1e-3, dropout=0.0))
    _, history = train_best_of_n(trainable(sft), prompts[:16], cfg, reward_model=gold, tokenizer=tokenizer,
                                 progress=False, callback=callback)
    assert seen == [0, 1] and history["round"] == [0, 1] and len(history["sft"]) == 2


def test_seeded_runs_repeat_exactly(tiny):
    (a, ha), (b, hb) = run(tiny, n=2, seed=4), run(tiny, n=2, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha["rm_reward_best"] == hb["rm_reward_best"] and ha["sft"][0]["train_loss"] == hb["sft"][0]["train_loss"]


def test_bad_configs_raise_clear_errors(tiny):
    world, tokenizer, sft, prompts, gold = tiny
    with pytest.raises(ValueError, match="n >= 1"):
        DistillConfig(n=0)
    with pytest.raises(ValueError, match="rounds"):
        DistillConfig(rounds=0)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0.0)
    with pytest.raises(ValueError, match="no prompts"):
        train_best_of_n(trainable(sft), [], DistillConfig(), reward_model=gold, tokenizer=tokenizer)
