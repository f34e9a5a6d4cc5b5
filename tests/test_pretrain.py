import math

import pytest
import torch

from minirlhf.model import GPT, get_config
from minirlhf.pretrain import (
    PretrainConfig,
    causal_lm_loss,
    get_batch,
    lr_at,
    pretrain,
    split_stream,
    token_stream,
)


def test_causal_lm_loss_matches_hand_computed_nll():
    # one sequence, vocabulary of 3, two positions: −(log p(u_1) + log p(u_2)) / 2, with the softmax by hand
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]]])
    targets = torch.tensor([[1, 2]])
    p1 = math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + math.exp(0.0))
    p2 = math.exp(3.0) / (2 * math.exp(0.5) + math.exp(3.0))
    expected = -(math.log(p1) + math.log(p2)) / 2
    assert causal_lm_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)


def test_causal_lm_loss_ignores_minus_100_and_checks_shapes():
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]]])
    p1 = math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + 1.0)
    assert causal_lm_loss(logits, torch.tensor([[1, -100]])).item() == pytest.approx(-math.log(p1), abs=1e-6)
    with pytest.raises(ValueError, match="targets"):
        causal_lm_loss(logits, torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match="no token"):
        causal_lm_loss(logits, torch.tensor([[-100, -100]]))


def test_model_loss_equals_causal_lm_loss(tiny_model):
    x = torch.randint(0, tiny_model.config.vocab_size, (2, 10))
    y = torch.randint(0, tiny_model.config.vocab_size, (2, 10))
    logits, loss = tiny_model(x, y)
    assert loss.item() == pytest.approx(causal_lm_loss(logits, y).item(), abs=1e-5)


def test_token_stream_separates_documents_with_eos(tiny_tokenizer):
    stream = token_stream(tiny_tokenizer, ["bobo likes red .", "kiki eats plums ."])
    assert (stream == tiny_tokenizer.eos_token_id).sum() == 2 and stream[-1] == tiny_tokenizer.eos_token_id
    with pytest.raises(ValueError, match="empty"):
        token_stream(tiny_tokenizer, [])


def test_get_batch_targets_are_inputs_shifted_by_one():
    stream = torch.arange(100)
    x, y = get_batch(stream, 8, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(5), 8, 4, torch.Generator())


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_pretraining_learns_a_repeating_pattern_and_is_seeded():
    stream = torch.tensor([5, 6, 7, 8, 9] * 200)
    train, val = split_stream(stream, 0.2)

    def run():
        torch.manual_seed(0)
        model = GPT(get_config("tiny", vocab_size=16, block_size=16))
        cfg = PretrainConfig(steps=100, batch_size=8, lr=1e-2, warmup_steps=5, eval_every=20, seed=1)
        return pretrain(model, train, val, cfg, progress=False)

    h1, h2 = run(), run()
    assert h1["val_loss"][-1] < 0.2 < math.log(16)          # a deterministic pattern is learnt almost perfectly
    assert h1["train_loss"] == h2["train_loss"]             # same seed, same numbers
