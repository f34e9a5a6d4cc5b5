"""Offline interop with Hugging Face ``transformers``: our GPT <-> ``GPT2LMHeadModel``, weights copied 1:1.

Our parameter names are GPT-2's, so the only change is the layout of the four projection matrices: GPT-2 stores
them as ``Conv1D`` weights (in_features, out_features); we use ``nn.Linear`` (out_features, in_features), hence
a transpose. Everything here is local: no model hub, no network (never ``from_pretrained("gpt2")``).

The tokenizer needs no conversion: ``minirlhf.tokenizer`` already returns a ``PreTrainedTokenizerFast``, which
``transformers`` uses as is (pass it to ``to_hf`` to copy its special-token ids into the config).

    hf_model = to_hf(model, tokenizer)           # then hf_model.generate(...), pipelines, save_pretrained(...)
    model = from_hf(hf_model)                    # and back
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .model import GPT, GPTConfig

# Conv1D weights in GPT-2 (stored transposed relative to nn.Linear)
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers some transformers versions keep in the state dict (old causal-mask tensors): not parameters
_IGNORED = (".attn.bias", ".attn.masked_bias")  # the leading dot keeps "attn.c_attn.bias" out


def _convert(state_dict: dict) -> dict:
    """Map a state dict one way or the other: the transpose is its own inverse."""
    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(_IGNORED):
            continue
        out[name] = tensor.t().contiguous() if name.endswith(_TRANSPOSED) else tensor
    return out


def to_hf(model: GPT, tokenizer=None, *, bos_token_id: int | None = None, eos_token_id: int | None = None,
          pad_token_id: int | None = None, attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` with our model's config and (copied) weights, on the same device and dtype.

    Special-token ids come from ``tokenizer`` when given, else from the keyword arguments (GPT2Config's own
    default, 50256, would be outside a small vocabulary, so unset ids stay None).
    attn_implementation: "sdpa" (default) or "eager"; both give the same numbers as ours.
    """
    c = model.config
    if not c.bias:
        raise ValueError("GPT-2 in transformers always has biases; a model with bias=False cannot be exported")
    if tokenizer is not None:
        bos_token_id = tokenizer.bos_token_id if bos_token_id is None else bos_token_id
        eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    hf_config = GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        n_inner=None,  # 4 * n_embd, as ours
        activation_function="gelu_new",  # GELU, tanh approximation: nn.GELU(approximate="tanh")
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
        layer_norm_epsilon=c.layer_norm_eps, tie_word_embeddings=True,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    hf_config._attn_implementation = attn_implementation
    p = model.lm_head.weight
    hf_model = GPT2LMHeadModel(hf_config).to(device=p.device, dtype=p.dtype)
    missing, unexpected = hf_model.load_state_dict(_convert(model.state_dict()), strict=False)
    missing = [k for k in missing if not k.endswith(_IGNORED)]
    if missing or unexpected:  # a mismatch here is a bug in this file, not in the caller's model
        raise RuntimeError(f"weight names do not match GPT2LMHeadModel: missing {missing}, unexpected {unexpected}")
    hf_model.tie_weights()
    return hf_model.train(model.training)


def from_hf(hf_model: GPT2LMHeadModel) -> GPT:
    """Our GPT with the config and weights of a ``GPT2LMHeadModel`` (same device, dtype and train/eval mode).

    Refuses GPT-2 variants our model cannot represent, saying which setting differs.
    """
    if not isinstance(hf_model, GPT2LMHeadModel):
        raise TypeError(f"from_hf expects a transformers GPT2LMHeadModel; got {type(hf_model).__name__}")
    hc = hf_model.config
    problems = []
    if hc.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={hc.activation_function!r} (ours is GELU-tanh, 'gelu_new')")
    if hc.n_inner not in (None, 4 * hc.n_embd):
        problems.append(f"n_inner={hc.n_inner} (ours is 4 * n_embd = {4 * hc.n_embd})")
    if not hc.scale_attn_weights:
        problems.append("scale_attn_weights=False (ours divides by sqrt(head size))")
    if hc.scale_attn_by_inverse_layer_idx:
        problems.append("scale_attn_by_inverse_layer_idx=True")
    if hc.add_cross_attention:
        problems.append("add_cross_attention=True (ours is decoder-only)")
    if not hc.tie_word_embeddings:
        problems.append("tie_word_embeddings=False (ours ties lm_head to wte)")
    if not hc.resid_pdrop == hc.embd_pdrop == hc.attn_pdrop:
        problems.append(f"different dropouts (resid {hc.resid_pdrop}, embd {hc.embd_pdrop}, attn {hc.attn_pdrop}; "
                        "ours uses one rate)")
    if problems:
        raise ValueError("cannot convert this GPT-2 to minirlhf's GPT: " + "; ".join(problems))
    config = GPTConfig(
        vocab_size=hc.vocab_size, block_size=hc.n_positions, n_layer=hc.n_layer, n_head=hc.n_head,
        n_embd=hc.n_embd, dropout=float(hc.resid_pdrop), layer_norm_eps=hc.layer_norm_epsilon,
    )
    p = hf_model.lm_head.weight
    model = GPT(config).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        model.load_state_dict(_convert(hf_model.state_dict()), strict=True)
    return model.train(hf_model.training)
