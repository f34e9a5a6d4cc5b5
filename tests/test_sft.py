import math

import pytest
import torch
import torch.nn.functional as F

from minirlhf.sft import SFTConfig, collate, masked_sft_loss, sft_example, train_sft
from minirlhf.tokenizer import encode_chat_prompt


def test_sft_example_masks_the_prompt(tiny_tokenizer):
    ids, labels = sft_example(tiny_tokenizer, "name two foods .", "plums and figs .")
    n_prompt = len(encode_chat_prompt(tiny_tokenizer, "name two foods ."))
    response = ids[n_prompt:]
    assert response[-1] == tiny_tokenizer.eos_token_id
    assert labels[: n_prompt - 1] == [-100] * (n_prompt - 1)       # the prompt is context, never a target
    assert labels[n_prompt - 1: -1] == response                     # position t predicts token t+1 of the response
    assert labels[-1] == -100 and len(ids) == len(labels)


def test_masked_sft_loss_equals_hand_computation(tiny_tokenizer, tiny_model):
    examples = [sft_example(tiny_tokenizer, "name two foods .", "plums ."),
                sft_example(tiny_tokenizer, "tell me about kiki .", "kiki likes green . kiki lives in a barn .")]
    ids, labels, mask = collate(examples, tiny_tokenizer.pad_token_id, tiny_model.config.block_size)
    loss = masked_sft_loss(tiny_model, ids, labels, mask)
    # by hand: run each example alone (no padding), sum −log p over response tokens, divide by their count
    total, count = 0.0, 0
    for x, y in examples:
        logits, _ = tiny_model(torch.tensor([x]))
        logp = F.log_softmax(logits[0], dim=-1)
        for t, target in enumerate(y):
            if target != -100:
                total -= logp[t, target].item()
                count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)


def test_collate_refuses_examples_longer_than_the_context(tiny_tokenizer):
    long = sft_example(tiny_tokenizer, "bobo likes red . " * 30, "red .")
    with pytest.raises(ValueError, match="context"):
        collate([long], tiny_tokenizer.pad_token_id, 64)


def test_train_sft_lowers_response_loss_and_selects_an_epoch(tiny_tokenizer, tiny_model):
    demos = [("what colour does bobo like ?", "bobo likes red ."), ("name two foods .", "plums and bread .")] * 4
    cfg = SFTConfig(epochs=4, batch_size=2, lr=1e-2, dropout=0.2, seed=0)
    seen = []
    model, history = train_sft(tiny_model, (demos, demos[:2]), cfg, tokenizer=tiny_tokenizer, progress=False,
                               callback=lambda epoch, stats: seen.append((epoch, sorted(stats))))
    assert model is tiny_model and not model.training
    assert all(isinstance(v, list) for v in history.values())               # a dict of lists
    assert history["epoch"] == [0, 1, 2, 3, 4] and len(history["seconds"]) == 5 and len(history["step"]) == 16
    assert history["val_loss"][-1] < history["val_loss"][0] - 1.0          # epoch 0 is the untouched model
    best = history["selected"].index(True)                                  # no eval_fn: lowest validation loss
    assert history["selected"].count(True) == 1 and 1 <= best <= 4
    assert history["val_loss"][best] == min(history["val_loss"][1:])
    assert seen == [(e, ["score", "val_loss"]) for e in range(5)]
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # the model's own dropout back
    with pytest.raises(ValueError, match="no demonstrations"):
        train_sft(tiny_model, ([], None), cfg, tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="val_demonstrations"):
        train_sft(tiny_model, demos[:2], cfg, tokenizer=tiny_tokenizer)     # a list of pairs, not (train, val)
    assert math.isfinite(history["train_loss"][-1])


def test_train_sft_selects_by_score_when_given(tiny_tokenizer, tiny_model):
    demos = [("name two foods .", "plums and bread .")] * 4
    scores = iter([0.0, 0.5, 0.9, 0.1])
    _, history = train_sft(tiny_model, (demos, None), SFTConfig(epochs=3, batch_size=4), tokenizer=tiny_tokenizer,
                           eval_fn=lambda m: next(scores), progress=False)
    assert history["score"] == [0.0, 0.5, 0.9, 0.1] and history["selected"] == [False, False, True, False]
