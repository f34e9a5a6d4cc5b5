import math

import pytest
import torch

from minirlhf.model import GPT, get_config
from minirlhf.pretrain import (
    PretrainConfig,
    StreamWindows,
    causal_lm_loss,
    cosine_lr,
    curriculum_stage,
    document_rows,
    get_batch,
    probe_batch,
    probe_loss,
    rows_loss,
    split_stream,
    stage_tokens,
    token_stream,
    train_pretrain,
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
    def lr_at(step):
        return cosine_lr(step, 100, lr=1.0, min_lr=0.1, warmup_steps=10)

    assert lr_at(0) == pytest.approx(0.1) and lr_at(9) == pytest.approx(1.0)
    assert lr_at(99) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s) >= lr_at(s + 1) for s in range(10, 99))
    # without warm-up (SFT): plain cosine from lr at step 0, half way at the middle
    assert cosine_lr(0, 10, 2.0) == 2.0 and cosine_lr(5, 10, 2.0) == pytest.approx(1.0)


def test_pretraining_learns_a_repeating_pattern_and_is_seeded():
    stream = torch.tensor([5, 6, 7, 8, 9] * 200)
    train, val = split_stream(stream, 0.2)

    def run(callback=None):
        torch.manual_seed(0)
        model = GPT(get_config("tiny", vocab_size=16, block_size=16))
        cfg = PretrainConfig(steps=100, tokens_per_step=128, curriculum=(), lr=1e-2, warmup_steps=5, eval_every=20,
                             seed=1)
        trained, history = train_pretrain(model, (train, val), cfg, progress=False, callback=callback)
        assert trained is model and not model.training
        return history

    seen = []
    h1, h2 = run(lambda step, stats: seen.append((step, sorted(stats)))), run()
    assert h1["val_loss"][-1] < 0.2 < math.log(16)          # a deterministic pattern is learnt almost perfectly
    assert h1["train_loss"] == h2["train_loss"]             # same seed, same numbers
    assert all(isinstance(v, list) for v in h1.values())    # a dict of lists, as every stage's history
    assert len(h1["step"]) == len(h1["train_loss"]) == 100 and len(h1["eval_step"]) == len(h1["seconds"]) == 6
    assert seen[0] == (0, ["lr", "train_loss", "val_loss"]) and seen[1] == (1, ["lr", "train_loss"])
    with pytest.raises(ValueError, match="train_ids, val_ids"):
        train_pretrain(GPT(get_config("tiny", vocab_size=16, block_size=16)), train, PretrainConfig(), progress=False)


# ------------------------------------------------------------------ the sequence-length curriculum and the probe
def test_curriculum_stages_keep_tokens_per_step_constant():
    cfg = PretrainConfig(steps=100, tokens_per_step=256, curriculum=((0, 8), (30, 16), (60, 64)))
    assert [curriculum_stage(s, cfg, 32) for s in (0, 29, 30, 59, 60, 99)] == [(0, 8), (0, 8), (1, 16), (1, 16),
                                                                               (2, 32), (2, 32)]   # capped at 32
    assert stage_tokens(cfg, 32) == [30 * 256 + 1, 30 * 256 + 1, 40 * 256 + 1]
    assert stage_tokens(PretrainConfig(steps=20, curriculum=((0, 8), (30, 16))), 32)[1] == 0   # never reached
    with pytest.raises(ValueError, match="start at step 0"):
        stage_tokens(PretrainConfig(curriculum=((10, 8),)), 32)


def test_each_stage_reads_its_stream_at_its_context():
    cfg = PretrainConfig(steps=12, tokens_per_step=64, curriculum=((0, 4), (4, 8), (8, 16)), warmup_steps=1,
                         eval_every=100, seed=0)
    streams = [torch.full((n,), 5 + i) for i, n in enumerate(stage_tokens(cfg, 16))]   # stage i: token 5 + i only
    seen = []
    model = GPT(get_config("tiny", vocab_size=16, block_size=16))
    original = model.forward

    def spy(x, *args, **kwargs):
        seen.append((tuple(x.shape), set(x.unique().tolist())))
        return original(x, *args, **kwargs)

    model.forward = spy
    _, history = train_pretrain(model, (streams, torch.arange(40) % 16), cfg, progress=False)
    train_calls = [s for s in seen if s[0][0] * s[0][1] == 64 and s[0][1] in (4, 8, 16)][:12]
    assert [shape for shape, _ in train_calls] == [(16, 4)] * 4 + [(8, 8)] * 4 + [(4, 16)] * 4   # B × T = 64
    assert [ids for _, ids in train_calls] == [{5}] * 4 + [{6}] * 4 + [{7}] * 4
    assert history["context"] == [4] * 4 + [8] * 4 + [16] * 4
    with pytest.raises(ValueError, match="3 stages"):
        train_pretrain(model, (streams[:2], streams[0]), cfg, progress=False)


def test_stream_windows_serve_every_window_once_per_pass():
    stream = torch.arange(41)                       # 10 windows of 4 (+1 for the last target)
    windows = StreamWindows(stream, 4, torch.Generator().manual_seed(0))
    x, y = windows.batch(10)
    assert sorted(x[:, 0].tolist()) == list(range(0, 40, 4)) and torch.equal(y, x + 1)
    x2, _ = windows.batch(3)                        # a second pass begins
    assert x2.shape == (3, 4) and set(x2[:, 0].tolist()) <= set(range(0, 40, 4))


def test_probe_batch_scores_only_the_marked_pieces(tiny_tokenizer, tiny_model):
    rows = [[("game :", False), ("\nbobo", False), (" red", False), ("\nbobo", False), (" red", True)]]
    x, y = probe_batch(tiny_tokenizer, rows, 64)
    whole = tiny_tokenizer.encode("game :\nbobo red\nbobo red", add_special_tokens=False)
    red = tiny_tokenizer.encode(" red", add_special_tokens=False)
    assert x[0].tolist() == whole[:-1]                          # pieces tokenize like the whole text
    assert [t for t in y[0].tolist() if t != -100] == red       # only the re-queried value is scored
    assert 0 < probe_loss(tiny_model, (x, y)) < 20
    with pytest.raises(ValueError, match="fits"):
        probe_batch(tiny_tokenizer, rows, 3)


def test_document_rows_read_every_document_from_its_start(tiny_tokenizer, tiny_model):
    texts = ["bobo likes red .", "kiki eats plums .", "mila lives in a cave . " * 6, "red and blue ."]
    x, y = document_rows(tiny_tokenizer, texts, 24)
    eos = tiny_tokenizer.eos_token_id
    n_targets = sum(len(tiny_tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)
    assert x.shape[1] <= 24 and int((y != -100).sum()) == n_targets      # each token and each EOS once
    short_x, _ = document_rows(tiny_tokenizer, texts[:2] + texts[3:], 24)
    assert all(row[0] == eos for row in short_x.tolist())                 # a row starts after an EOS ...
    assert sum(row[0] != eos for row in x.tolist()) >= 1                  # ... unless a long document goes on
    inside = y[:, 1:] != -100                                              # both t and t+1 are real tokens
    assert torch.equal(x[:, 1:][inside], y[:, :-1][inside])              # y is x shifted by one
    loss = rows_loss(tiny_model, (x, y), batch_size=2)
    assert loss == pytest.approx(rows_loss(tiny_model, (x, y), batch_size=len(x)), rel=1e-5)
