"""DPO: the loss against hand computations, π = π_ref gives log 2, and DPO on gold-ranked comparisons raises gold."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_rl import single_thread, tiny_setup, trainable

from minirlhf import evaluate as ev
from minirlhf.compare import gold_ranked
from minirlhf.comparisons import sample_comparisons
from minirlhf.dpo import DPOConfig, answer_logprobs, batch_loss, dpo_loss, rankings_of, train_dpo
from minirlhf.reward import encode_response
from minirlhf.tokenizer import encode_chat_prompt


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_loss_of_one_pair_by_hand():
    logp, ref_logp = torch.tensor([[-3.0, -5.0]]), torch.tensor([[-4.0, -4.5]])
    loss, stats = dpo_loss(logp, ref_logp, torch.tensor([[0, 1]]), beta=0.5)
    # r̂_w = 0.5·(−3 + 4) = 0.5, r̂_l = 0.5·(−5 + 4.5) = −0.25: loss = −log σ(0.75)
    assert loss.item() == pytest.approx(-log_sigmoid(0.75))
    assert stats["chosen"].item() == pytest.approx(0.5) and stats["rejected"].item() == pytest.approx(-0.25)
    assert stats["margin"].item() == pytest.approx(0.75) and stats["accuracy"].item() == 1.0


def test_dpo_loss_averages_the_pairs_of_each_prompt_then_the_prompts():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-2.0, -1.0, 0.0]])
    ref_logp = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -1.0, 0.0]])   # the 3rd slot of prompt 2 is padding
    rankings = torch.tensor([[2, 0, 1], [1, 0, -1]])                 # prompt 1: y_2 > y_0 > y_1; prompt 2: y_1 > y_0
    beta = 2.0
    r = [[beta * (a - b) for a, b in zip(row, ref)] for row, ref in zip(logp.tolist(), ref_logp.tolist())]
    # r̂ = [[1, −2, 0], [−2, 0, ·]]
    prompt1 = -(log_sigmoid(r[0][2] - r[0][0]) + log_sigmoid(r[0][2] - r[0][1]) + log_sigmoid(r[0][0] - r[0][1])) / 3
    prompt2 = -log_sigmoid(r[1][1] - r[1][0])
    loss, stats = dpo_loss(logp, ref_logp, rankings, beta)
    assert loss.item() == pytest.approx((prompt1 + prompt2) / 2)
    # 4 pairs: winners r̂ = 0, 0, 1, 0 and losers 1, −2, −2, −2; right: (2,1), (0,1), (1,0) of prompt 2
    assert stats["chosen"].item() == pytest.approx(1 / 4) and stats["rejected"].item() == pytest.approx(-5 / 4)
    assert stats["accuracy"].item() == pytest.approx(3 / 4)


def test_dpo_loss_gradient_raises_the_winner_and_lowers_the_loser():
    logp = torch.tensor([[-2.0, -2.0]], requires_grad=True)
    loss, _ = dpo_loss(logp, torch.tensor([[-2.0, -2.0]]), torch.tensor([[1, 0]]), beta=0.1)
    loss.backward()
    # d/d log π(y_w) of −log σ(β·Δ) at Δ = 0 is −β·σ(0) = −0.05: gradient descent raises log π(y_w)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.05, -0.05]]))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tiny(one_thread):
    world, tokenizer, sft, prompts, gold = tiny_setup()
    comparisons = gold_ranked(sample_comparisons(prompts, {"sft": sft}, tokenizer, world, k=4, temperatures=(1.0,),
                                                 seed=0, max_new_tokens=16))
    return world, tokenizer, sft, prompts, comparisons


def test_answer_logprobs_sum_the_answer_tokens_of_each_sequence_alone(tiny):
    world, tokenizer, sft, prompts, comparisons = tiny
    batch = comparisons[:3]
    got = answer_logprobs(sft, tokenizer, batch)                      # (3, K) from one padded batch
    for n, c in enumerate(batch):
        for k, (response, ended) in enumerate(zip(c.responses, c.ended)):
            ids = encode_response(tokenizer, c.prompt, response, ended)   # as the reward model reads it
            P = len(encode_chat_prompt(tokenizer, c.prompt))
            logits, _ = sft(torch.tensor([ids]))
            logp = F.log_softmax(logits[0].double(), dim=-1)
            expected = sum(logp[t - 1, ids[t]].item() for t in range(P, len(ids)))   # Σ_t log π(y_t | x, y_<t)
            assert got[n, k].item() == pytest.approx(expected, abs=1e-4)


def test_policy_equal_to_the_reference_gives_log_2_and_zero_margins(tiny):
    world, tokenizer, sft, prompts, comparisons = tiny
    loss, stats = batch_loss(copy.deepcopy(sft), sft, tokenizer, comparisons[:8], beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["chosen"].item() == 0 and stats["rejected"].item() == 0 and stats["margin"].item() == 0
    _, history = train_dpo(trainable(sft), (comparisons[:8], None), DPOConfig(batch_prompts=8), reference=sft,
                           tokenizer=tokenizer, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)   # the first step starts at π = π_ref


def test_rankings_of_pads_with_minus_one(tiny):
    full = next(c for c in tiny[4] if c.k == 4)
    short = copy.deepcopy(full)
    short.responses, short.ended, short.gold, short.ranking = short.responses[:2], short.ended[:2], short.gold[:2], [1, 0]
    assert rankings_of([full, short]).tolist() == [full.ranking, [1, 0, -1, -1]]


def gold_of(model, tiny) -> float:
    world, tokenizer, _, prompts, _ = tiny
    return ev.summarize(ev.sample_answers(model, tokenizer, world, prompts * 2, 1.0, 24, seed=123))["gold"]


def run_dpo(tiny, seed=0, epochs=2):
    world, tokenizer, sft, prompts, comparisons = tiny
    cfg = DPOConfig(beta=0.1, lr=1e-3, epochs=epochs, batch_prompts=8, seed=seed)
    return train_dpo(trainable(sft), (comparisons[16:], comparisons[:16]), cfg, reference=sft, tokenizer=tokenizer,
                     progress=False)   # 80 comparisons to train on, 16 other prompts' held out


def test_dpo_on_gold_ranked_comparisons_raises_the_gold_score(tiny):
    sft = tiny[2]
    policy, history = run_dpo(tiny)
    assert not policy.training and all(p.requires_grad for p in policy.parameters())
    assert not any(p.requires_grad for p in sft.parameters())          # the reference stays frozen
    assert gold_of(policy, tiny) > gold_of(sft, tiny) + 0.05
    assert history["val_accuracy"][-1] > 0.6 and history["val_margin"][-1] > 0.1
    assert len(history["step"]) == 2 * math.ceil((len(tiny[4]) - 16) / 8)
    assert history["val_step"] == [len(history["step"]) // 2, len(history["step"])]   # after each epoch


def test_seeded_dpo_runs_repeat_exactly(tiny):
    a, b = (run_dpo(tiny, seed=3, epochs=1)[1] for _ in range(2))
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


def test_bad_configs_and_arguments_raise_clear_errors(tiny):
    world, tokenizer, sft, prompts, comparisons = tiny
    with pytest.raises(ValueError, match="β must be > 0"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="batch_prompts"):
        DPOConfig(batch_prompts=0)
    with pytest.raises(ValueError, match="share parameters"):
        train_dpo(sft, (comparisons, None), DPOConfig(), reference=sft, tokenizer=tokenizer, progress=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_dpo(copy.deepcopy(sft), (comparisons, None), DPOConfig(), reference=sft, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="no training comparisons"):
        train_dpo(trainable(sft), ([], None), DPOConfig(), reference=sft, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"\(train_comparisons, val_comparisons\)"):
        train_dpo(trainable(sft), comparisons, DPOConfig(), reference=sft, tokenizer=tokenizer)
