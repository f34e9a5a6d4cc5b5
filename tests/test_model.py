"""GPT (minirlhf/model.py): causality, masks, KV cache, sampling, loss and errors, on tiny configs."""

import math

import pytest
import torch
import torch.nn.functional as F

from minirlhf.model import GPT, PRESETS, GPTConfig, KVCache, get_config, pick_device, token_logprobs

V = 97  # a small odd vocabulary: wrong indexing shows up quickly


def make_model(seed=0, **overrides) -> GPT:
    """A tiny GPT with large random weights, so greedy decoding does not just repeat one token."""
    torch.manual_seed(seed)
    cfg = get_config("tiny", vocab_size=V, block_size=48, **overrides)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.3)
        model.transformer.wpe.weight.normal_(0, 1.0)  # strong positions: outputs change along the sequence
    return model.eval()


def ids(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- config ----------------------------------------------------------------------------------------------------

def test_presets_and_get_config():
    assert set(PRESETS) == {"tiny", "course", "gpu"}
    assert get_config("course", dropout=0.1).dropout == 0.1
    assert PRESETS["course"].dropout == 0.0  # presets are not mutated by overrides
    with pytest.raises(ValueError, match="valid names are.*course.*tiny"):
        get_config("huge")


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(n_embd=30, n_head=4), "n_embd=30.*n_head=4"),
    (dict(n_layer=0), "n_layer must be a positive integer"),
    (dict(vocab_size=-5), "vocab_size"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(dropout=-0.1), "dropout"),
])
def test_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPTConfig(**kwargs)
    with pytest.raises(ValueError, match=pattern):  # overrides are validated too
        get_config("tiny", **kwargs)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_formula(bias):
    cfg = GPTConfig(vocab_size=V, block_size=24, n_layer=3, n_head=2, n_embd=16, bias=bias)
    model = GPT(cfg)
    C, L = cfg.n_embd, cfg.n_layer
    b = int(bias)
    per_layer = 12 * C * C + b * (3 * C + C + 4 * C + C) + (2 + 2 * b) * C  # weights + Linear biases + 2 LayerNorms
    embeddings = V * C + cfg.block_size * C  # wte (tied with lm_head: counted once) + wpe
    assert model.num_parameters() == embeddings + L * per_layer + (1 + b) * C
    assert model.num_parameters(exclude_embeddings=True) == L * per_layer + (1 + b) * C


def test_hf_parameter_names_and_tying():
    model = GPT(get_config("tiny", n_layer=1))
    names = set(model.state_dict())
    for n in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
              "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias", "transformer.h.0.ln_2.bias",
              "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight", "transformer.ln_f.weight",
              "lm_head.weight"]:
        assert n in names, n
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gpt2_init():
    torch.manual_seed(0)
    model = GPT(get_config("tiny", n_layer=8, n_embd=128, n_head=4))
    std = lambda p: p.detach().std().item()
    assert std(model.transformer.h[0].attn.c_attn.weight) == pytest.approx(0.02, rel=0.05)
    assert std(model.transformer.h[0].mlp.c_proj.weight) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert std(model.transformer.h[0].attn.c_proj.weight) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.transformer.h[0].attn.c_attn.bias.abs().max() == 0


# ---- forward -----------------------------------------------------------------------------------------------------

def test_causality():
    model = make_model()
    x = ids(2, 20)
    logits, _ = model(x)
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % V  # change the future
    logits2, _ = model(y)
    torch.testing.assert_close(logits2[:, :12], logits[:, :12], atol=1e-5, rtol=0)
    assert (logits2[:, 12:] - logits[:, 12:]).abs().max() > 1e-2  # and the future does change


def test_manual_attention_equals_sdpa():
    model = make_model()
    x = ids(3, 17)
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[0, :5] = 0  # left padding
    mask[1, 13:] = 0  # right padding
    for am in (None, mask):
        fast, _ = model(x, attention_mask=am)
        model.attn_impl = "manual"
        slow, _ = model(x, attention_mask=am)
        model.attn_impl = "sdpa"
        torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attn_impl"):
        model.attn_impl = "flash"


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_left_and_right_padding_do_not_change_real_tokens(impl):
    model = make_model()
    model.attn_impl = impl
    a, b = ids(1, 9, seed=2), ids(1, 14, seed=3)
    ref_a, ref_b = model(a)[0], model(b)[0]
    # left padding: a's 9 tokens behind 5 pads
    left = torch.cat([torch.full((1, 5), 7), a], 1)
    batch = torch.cat([left, b], 0)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[0, :5] = 0
    logits, _ = model(batch, attention_mask=mask)
    assert torch.isfinite(logits).all()  # pad queries attend to themselves: no NaN
    torch.testing.assert_close(logits[0, 5:], ref_a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1], ref_b[0], atol=1e-5, rtol=0)
    # right padding
    right = torch.cat([a, torch.full((1, 5), 7)], 1)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[0, 9:] = 0
    logits, _ = model(torch.cat([right, b], 0), attention_mask=mask)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0, :9], ref_a[0], atol=1e-5, rtol=0)
    # hidden_states follow the same masks
    h = model.hidden_states(torch.cat([right, b], 0), attention_mask=mask)
    assert h.shape == (2, 14, model.config.n_embd)
    torch.testing.assert_close(h[0, :9], model.hidden_states(a)[0], atol=1e-5, rtol=0)


def test_hidden_states_feed_the_unembedding():
    model = make_model()
    x = ids(2, 11)
    torch.testing.assert_close(model.lm_head(model.hidden_states(x)), model(x)[0], atol=1e-6, rtol=0)


def test_loss_is_hand_computed_nll_and_ignores_minus_100():
    model = make_model()
    x = ids(2, 6)
    targets = ids(2, 6, seed=9)
    targets[0, 2] = -100
    targets[1, 0] = -100
    logits, loss = model(x, targets)
    nll, n = 0.0, 0
    for b in range(2):
        for t in range(6):
            if targets[b, t] == -100:
                continue
            z = logits[b, t].double()
            log_softmax = z - torch.log(torch.exp(z - z.max()).sum()) - z.max()  # by hand, numerically stable
            nll -= log_softmax[targets[b, t]].item()
            n += 1
    assert n == 10
    assert loss.item() == pytest.approx(nll / n, abs=1e-5)
    # changing the logits' input at an ignored target cannot matter; changing a used target does
    t2 = targets.clone()
    t2[0, 2] = -100
    assert model(x, t2)[1].item() == pytest.approx(loss.item(), abs=1e-7)
    t2[0, 3] = (t2[0, 3] + 1) % V
    assert model(x, t2)[1].item() != pytest.approx(loss.item(), abs=1e-4)


def test_loss_backward_and_dropout_train_mode():
    model = make_model(dropout=0.2).train()
    x = ids(2, 10)
    _, loss = model(x, ids(2, 10, seed=4))
    loss.backward()
    assert model.transformer.wte.weight.grad is not None
    assert not torch.equal(model(x)[0], model(x)[0])  # dropout active in train mode
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_token_logprobs():
    logits = torch.randn(2, 3, 5)
    tokens = torch.tensor([[0, 4, 2], [1, 1, 3]])
    expect = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, tokens), expect)
    hot = torch.log_softmax(logits / 0.5, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, tokens, temperature=0.5), hot)
    torch.testing.assert_close(token_logprobs(logits[:, 0], tokens[:, 0]), expect[:, 0])  # (B, V), (B,) -> (B,)


def test_response_logits_and_values_read_the_positions_that_predict_the_response():
    from minirlhf.model import predicting_positions, response_logits, response_values
    from minirlhf.reward import RewardModel

    model = make_model().eval()
    seq = ids(2, 9)
    attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0], [1] * 9])  # left-padded prompt, right-padded response
    full = model(seq, attention_mask=attn)[0]  # (B, T, V)
    assert predicting_positions(torch.arange(9)[None], 4).tolist() == [[3, 4, 5, 6, 7]]  # P-1 .. T-2
    torch.testing.assert_close(response_logits(model, seq, attn, 4), full[:, 3:-1])
    value = RewardModel.from_gpt(model).eval()
    torch.testing.assert_close(response_values(value, seq, attn, 4), value.token_values(seq, attn)[:, 3:-1])


def test_set_dropout_reaches_every_dropout_and_the_attention_probability():
    model = make_model(dropout=0.1)
    model.set_dropout(0.2)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.2 for p in ps)
    assert all(block.attn.dropout == 0.2 for block in model.transformer.h)  # the float SDPA reads
    assert model.config.dropout == 0.1  # the built-with value, to restore later
    model.set_dropout(0.0)
    model.train()
    x = ids(2, 10)
    assert torch.equal(model(x)[0], model(x)[0])  # no dropout left anywhere, even in train mode
    with pytest.raises(ValueError, match="dropout"):
        model.set_dropout(1.0)


def test_make_optimizer_decays_matrices_only_and_gives_each_part_its_lr():
    from minirlhf.model import make_optimizer

    model, head = make_model(), torch.nn.Linear(32, 1)
    model.transformer.wpe.weight.requires_grad_(False)  # frozen parameters are left out
    opt = make_optimizer([(model, 1e-3), (head, 1e-2)], weight_decay=0.1, betas=(0.9, 0.99), eps=1e-5)
    groups = [(g["lr"], g["weight_decay"], {p.dim() for p in g["params"]}) for g in opt.param_groups]
    assert groups == [(1e-3, 0.1, {2}), (1e-3, 0.0, {1}), (1e-2, 0.1, {2}), (1e-2, 0.0, {1})]
    assert opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["eps"] == 1e-5
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.transformer.wpe.weight) not in in_opt and id(model.lm_head.weight) in in_opt  # tied: once


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in {"cpu", "cuda", "mps"}


# ---- errors --------------------------------------------------------------------------------------------------------

def test_input_errors_speak_plainly():
    model = make_model()
    with pytest.raises(ValueError, match=r"2-D.*got shape \(5,\).*idx\[None\]"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="LongTensor.*torch.float32"):
        model(torch.zeros(1, 5))
    with pytest.raises(TypeError, match="got a list"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="input is 49 tokens but the model's context.*is 48"):
        model(torch.zeros(1, 49, dtype=torch.long))
    x = ids(2, 5)
    x[1, 3] = V + 3
    with pytest.raises(ValueError, match=f"max id found: {V + 3}"):
        model(x)
    x[1, 3] = -1
    with pytest.raises(ValueError, match="token id -1 is outside"):
        model(x)
    with pytest.raises(ValueError, match=r"targets must have the shape of idx \(2, 5\); got \(2, 4\)"):
        model(ids(2, 5), ids(2, 4))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of idx \(2, 5\); got \(2, 6\)"):
        model(ids(2, 5), attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape"):
        model.hidden_states(ids(2, 5), attention_mask=torch.ones(5))


def test_generate_errors():
    model = make_model()
    with pytest.raises(ValueError, match="prompt length 40 \\+ max_new_tokens 10 = 50 exceeds.*48"):
        model.generate([[1] * 40], 10)
    with pytest.raises(ValueError, match="empty prompt"):
        model.generate([[1, 2], []], 3)
    with pytest.raises(TypeError, match="list of token-id lists"):
        model.generate([1, 2, 3], 3)
    with pytest.raises(ValueError, match="max id found"):
        model.generate([[1, V]], 3)
    with pytest.raises(ValueError, match="temperature"):
        model.generate([[1]], 3, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate([[1]], 3, top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate([[1]], 3, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([[1]], 0)


# ---- KV cache and generation --------------------------------------------------------------------------------------

def test_kv_cache_logits_equal_full_forward():
    model = make_model()
    x = ids(2, 16)
    full, _ = model(x)
    cache = KVCache(model.config, 2, 16, x.device)
    pos, mask = model._masks(x[:, :7])
    steps = [model.lm_head(model._trunk(x[:, :7], pos, mask, cache))]  # a 7-token prefill ...
    pos, mask = model._masks(x[:, 7:10], past=7)
    steps.append(model.lm_head(model._trunk(x[:, 7:10], pos, mask, cache)))  # ... a 3-token chunk ...
    for t in range(10, 16):  # ... then one token at a time
        pos, mask = model._masks(x[:, t : t + 1], past=t)
        steps.append(model.lm_head(model._trunk(x[:, t : t + 1], pos, mask, cache)))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.length == 16


def test_greedy_with_and_without_cache_identical():
    model = make_model()
    prompts = [[5, 17, 3], [9, 9, 40, 2, 11, 7, 1], [60]]
    a = model.generate(prompts, 20, temperature=0, use_cache=True)
    b = model.generate(prompts, 20, temperature=0, use_cache=False)
    assert torch.equal(a.sequences, b.sequences)
    assert len(set(a.response_ids[1])) > 3  # the test model does not just repeat one token


def test_batched_generation_equals_one_prompt_at_a_time():
    model = make_model()
    prompts = [[5, 17, 3], [9, 9, 40, 2, 11, 7, 1], [60], [33, 34]]
    eos = 13
    batch = model.generate(prompts, 25, temperature=0, eos_token_id=eos, pad_token_id=0, return_logprobs=True)
    P = batch.prompt_length
    assert P == 7 and batch.sequences.shape[0] == 4
    for b, p in enumerate(prompts):
        alone = model.generate([p], 25, temperature=0, eos_token_id=eos, pad_token_id=0, return_logprobs=True)
        assert alone.response_ids[0] == batch.response_ids[b]
        assert alone.ended[0] == batch.ended[b]
        R = len(alone.response_ids[0])
        torch.testing.assert_close(batch.logprobs[b, :R], alone.logprobs[0, :R], atol=1e-5, rtol=0)
        # the left-padded prompt sits right-aligned, padding masked
        assert batch.sequences[b, P - len(p) : P].tolist() == p
        assert batch.attention_mask[b, :P].tolist() == [0] * (P - len(p)) + [1] * len(p)


def test_eos_stops_rows_and_pads_after():
    model = make_model()
    prompts = [[5, 17, 3], [9, 9, 40, 2, 11, 7, 1]]
    free = model.generate(prompts, 12, temperature=0)
    eos = free.response_ids[0][2]  # row 0 produces this token at step 2 at the latest
    pad = V - 1
    g = model.generate(prompts, 12, temperature=0, eos_token_id=eos, pad_token_id=pad, return_logprobs=True)
    assert g.ended[0]
    r0 = g.response_ids[0]
    assert r0[-1] == eos and eos not in r0[:-1] and len(r0) <= 3
    P, R = g.prompt_length, g.sequences.shape[1] - g.prompt_length
    assert g.sequences[0, P + len(r0) :].eq(pad).all()
    assert g.attention_mask[0, P:].tolist() == [1] * len(r0) + [0] * (R - len(r0))
    assert g.logprobs[0, len(r0) :].eq(0).all() and g.logprobs[0, : len(r0)].lt(0).all()
    assert torch.equal(g.response_mask, g.attention_mask[:, P:])
    # for the row that did not end, response_ids are all generated tokens
    if not g.ended[1]:
        assert len(g.response_ids[1]) == R


def test_stops_early_when_every_row_ended():
    model = make_model()
    free = model.generate([[5, 17, 3]], 10, temperature=0)
    eos = free.response_ids[0][0]
    g = model.generate([[5, 17, 3], [5, 17, 3]], 10, temperature=0, eos_token_id=eos)
    assert g.sequences.shape == (2, 4) and g.ended.all()
    assert g.response_ids == [[eos], [eos]]


def test_seeded_sampling_is_reproducible_and_varies_by_seed():
    model = make_model()
    prompts = [[5, 17, 3], [9, 40]]
    run = lambda seed, **kw: model.generate(prompts, 15, temperature=1.0, top_k=20, top_p=0.9,
                                             generator=torch.Generator().manual_seed(seed), **kw).sequences
    assert torch.equal(run(0), run(0))
    assert torch.equal(run(0), run(0, use_cache=False))
    assert not torch.equal(run(0), run(1))


def test_top_k_1_is_greedy():
    model = make_model()
    prompts = [[5, 17, 3], [9, 40]]
    greedy = model.generate(prompts, 15, temperature=0)
    topk1 = model.generate(prompts, 15, temperature=1.3, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy.sequences, topk1.sequences)
    tiny_p = model.generate(prompts, 15, temperature=0.8, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy.sequences, tiny_p.sequences)  # the nucleus keeps at least the top token


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, None, None), (1.0, None, None), (1.5, 10, 0.8),
                                                       (0.0, None, None)])
def test_returned_logprobs_match_a_forward_pass(temperature, top_k, top_p):
    model = make_model()
    prompts = [[5, 17, 3], [9, 9, 40, 2, 11, 7, 1]]
    g = model.generate(prompts, 12, temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=13,
                       generator=torch.Generator().manual_seed(3), return_logprobs=True)
    P = g.prompt_length
    logits, _ = model(g.sequences, attention_mask=g.attention_mask)  # (B, P+R, V)
    logits = logits[:, P - 1 : -1]  # the logits that predicted each response token
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:  # nucleus, written differently from model.py: keep tokens until the mass reaches top_p
        probs = F.softmax(logits, -1)
        keep = torch.zeros_like(probs, dtype=torch.bool)
        for b in range(probs.shape[0]):
            for t in range(probs.shape[1]):
                order = probs[b, t].argsort(descending=True)
                mass = 0.0
                for j in order.tolist():
                    keep[b, t, j] = True
                    mass += probs[b, t, j].item()
                    if mass >= top_p:
                        break
        logits = logits.masked_fill(~keep, float("-inf"))
    expect = token_logprobs(logits, g.sequences[:, P:]).where(g.response_mask.bool(), 0.0)  # pad: -inf -> 0
    torch.testing.assert_close(g.logprobs, expect, atol=1e-4, rtol=0)
    assert torch.isfinite(g.logprobs).all()


def test_generate_accepts_a_tensor_and_restores_train_mode():
    model = make_model().train()
    x = ids(2, 5)
    g = model.generate(x, 6, temperature=0)
    assert model.training
    assert torch.equal(g.sequences[:, :5], x) and g.attention_mask.all() and g.logprobs is None
    assert g.prompt_length == 5 and g.sequences.shape == (2, 11)
    assert not g.ended.any()
    assert g.sequences.shape[1] <= model.config.block_size
    with torch.enable_grad():
        assert not model.generate(x, 2).sequences.requires_grad


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_gradients_stay_finite_with_padding(impl):
    # a NaN at a padding position would poison every gradient even where the loss ignores it (NaN * 0 = NaN)
    model = make_model()
    model.attn_impl = impl
    x = ids(2, 12)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    mask[1, 9:] = 0  # right padding
    targets = x.roll(-1, 1).masked_fill(mask == 0, -100)
    _, loss = model(x, targets, attention_mask=mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_pad_right_and_last_token_index():
    from minirlhf.model import last_token_index, pad_right

    ids, mask = pad_right([[5, 6, 7], [8]], pad_value=1, block_size=8)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert last_token_index(mask).tolist() == [2, 0]
    assert last_token_index(torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])).tolist() == [3, 2]   # left and mixed padding
    with pytest.raises(ValueError, match="all zeros"):
        last_token_index(torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="context is 2"):
        pad_right([[1, 2, 3]], 0, block_size=2)
