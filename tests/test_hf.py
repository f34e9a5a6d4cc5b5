"""minirlhf/hf.py: our GPT and transformers' GPT2LMHeadModel compute the same function (the minGPT check)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minirlhf.hf import from_hf, to_hf
from minirlhf.model import GPT, GPTConfig

CONFIGS = [
    GPTConfig(vocab_size=97, block_size=32, n_layer=1, n_head=1, n_embd=8),
    GPTConfig(vocab_size=200, block_size=48, n_layer=2, n_head=4, n_embd=32, layer_norm_eps=1e-6),
    GPTConfig(vocab_size=64, block_size=40, n_layer=3, n_head=3, n_embd=48, dropout=0.1),
]


def random_gpt(config, seed=0) -> GPT:
    """Large random weights (every parameter, biases and LayerNorms included), so a wrong mapping shows."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if ".ln" in name and name.endswith("weight") else 0.3 * torch.randn_like(p))
        model.transformer.wpe.weight.normal_(0, 1.0)
    return model.eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"L{c.n_layer}h{c.n_head}d{c.n_embd}")
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_logits_agree_both_directions(config, attn_implementation):
    ours = random_gpt(config)
    hf = to_hf(ours, attn_implementation=attn_implementation).eval()
    assert isinstance(hf, GPT2LMHeadModel) and hf.dtype == torch.float32
    assert hf.config._attn_implementation == attn_implementation
    assert hf.config.n_positions == config.block_size and hf.config.activation_function == "gelu_new"
    assert hf.config.resid_pdrop == hf.config.attn_pdrop == hf.config.embd_pdrop == config.dropout
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # still tied
    x = torch.randint(0, config.vocab_size, (3, config.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, _ = ours(x)
        torch.testing.assert_close(hf(x).logits, ref, atol=1e-5, rtol=0)
        back = from_hf(hf)
        assert back.config == config
        torch.testing.assert_close(back(x)[0], ref, atol=1e-5, rtol=0)
        # with left padding: transformers derives positions from the mask the same way in generate();
        # here we pass them explicitly
        mask = torch.ones_like(x)
        mask[0, :7] = 0
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        got = hf(x, attention_mask=mask, position_ids=pos).logits
        want, _ = ours(x, attention_mask=mask)
        torch.testing.assert_close(got[0, 7:], want[0, 7:], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1:], want[1:], atol=1e-5, rtol=0)


def test_from_hf_on_a_model_built_by_transformers():
    torch.manual_seed(0)
    hc = GPT2Config(vocab_size=50, n_positions=24, n_embd=16, n_layer=2, n_head=2, bos_token_id=None,
                    eos_token_id=None)
    hf = GPT2LMHeadModel(hc).eval()
    ours = from_hf(hf)
    assert not ours.training
    x = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, pattern", [
    (dict(activation_function="relu"), "activation_function='relu'"),
    (dict(n_inner=20), "n_inner=20"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(attn_pdrop=0.3), "different dropouts"),
])
def test_from_hf_refuses_what_we_cannot_represent(change, pattern):
    hc = GPT2Config(vocab_size=50, n_positions=24, n_embd=16, n_layer=1, n_head=2, **change)
    with pytest.raises(ValueError, match=pattern):
        from_hf(GPT2LMHeadModel(hc))


def test_to_hf_refuses_bias_false_and_from_hf_refuses_other_classes():
    with pytest.raises(ValueError, match="bias=False"):
        to_hf(GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8, bias=False)))
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        from_hf(GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8)))


def test_special_token_ids_come_from_the_tokenizer_or_arguments():
    class Tok:  # the three attributes to_hf reads from a PreTrainedTokenizerFast
        bos_token_id, eos_token_id, pad_token_id = None, 0, 1

    model = random_gpt(CONFIGS[0])
    assert (to_hf(model, Tok()).config.eos_token_id, to_hf(model, Tok()).config.pad_token_id) == (0, 1)
    hf = to_hf(model, eos_token_id=5)
    assert hf.config.eos_token_id == 5 and hf.config.bos_token_id is None and hf.config.pad_token_id is None


def test_greedy_generate_matches_transformers_token_for_token():
    config = CONFIGS[1]
    ours = random_gpt(config, seed=3)
    hf = to_hf(ours).eval()
    prompts = [[5, 17, 3, 8], [9, 9, 40, 2, 11, 7, 1], [60], [33, 34, 35]]
    eos, pad = 172, 0  # 172: a token this model emits in some rows but not all
    g = ours.generate(prompts, 30, temperature=0, eos_token_id=eos, pad_token_id=pad)
    assert g.ended.any() and not g.ended.all()
    assert sum(len(set(r)) for r in g.response_ids) > 12  # varied output, not one repeated token
    P = g.prompt_length
    out = hf.generate(
        g.sequences[:, :P], attention_mask=g.attention_mask[:, :P], max_new_tokens=30, do_sample=False,
        eos_token_id=eos, pad_token_id=pad,
    )
    assert out.shape[1] <= P + 30
    for b in range(len(prompts)):
        theirs = out[b, P:].tolist()
        if eos in theirs:
            theirs = theirs[: theirs.index(eos) + 1]
        else:
            theirs = theirs[: len(g.response_ids[b])]  # transformers may stop a finished batch at the same step
        assert theirs == g.response_ids[b], b
