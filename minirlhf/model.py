"""GPT-2, from scratch and readable: the language model every later stage starts from.

Architecture as in GPT-2 (Radford et al., 2019, section 2.3): a decoder-only Transformer (Vaswani et al., 2017)
with pre-LayerNorm blocks, learned position embeddings, GELU (tanh approximation) and an unembedding tied to the
token embedding. Parameter names are those of Hugging Face's ``GPT2LMHeadModel``, so ``minirlhf.hf`` maps the two
one to one (we use ``nn.Linear`` where GPT-2 used ``Conv1D``: the weights are transposed).

Besides the forward pass this file holds what the InstructGPT stages need from a policy:
``generate`` (batched prompts of different lengths, KV cache, temperature / top-k / top-p sampling, per-token
log-probabilities for PPO) and ``hidden_states`` (the trunk of the reward model); and the few primitives every
training stage shares: ``token_logprobs``, ``response_logits`` / ``response_values`` (the positions that predict a
response), ``make_optimizer`` and ``GPT.set_dropout``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 1024  # BPE vocabulary of the toy world (GPT-2: 50257)
    block_size: int = 128  # context window in tokens (GPT-2: 1024)
    n_layer: int = 4  # Transformer blocks (GPT-2 small: 12)
    n_head: int = 4  # attention heads per block (GPT-2 small: 12)
    n_embd: int = 128  # model width d_model (GPT-2 small: 768); must be divisible by n_head
    dropout: float = 0.0  # residual, attention and embedding dropout (GPT-2: 0.1); 0 suits tiny data + short runs
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 (False cannot be exported to transformers)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon, as GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer; got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: each head gets n_embd // n_head "
                f"dimensions; choose n_embd as a multiple of n_head (e.g. n_embd={self.n_head * 32})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"GPTConfig.layer_norm_eps must be positive; got {self.layer_norm_eps}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


PRESETS = {
    # for tests: builds and runs in milliseconds
    "tiny": GPTConfig(vocab_size=1024, block_size=64, n_layer=2, n_head=2, n_embd=32),
    # for the notebooks: about 0.94M parameters, trains in minutes on 2 CPU cores
    "course": GPTConfig(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=128),
    # for one GPU (docs/scaling.md): about 26M parameters, a context of 256; too slow for a CPU
    "gpu": GPTConfig(vocab_size=1024, block_size=256, n_layer=8, n_head=8, n_embd=512),
}


def get_config(name: str, **overrides) -> GPTConfig:
    """A named preset, optionally with some fields changed: ``get_config("course", dropout=0.1)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid names are {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # replace() re-runs the validation in __post_init__


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """``prefer`` if given, else $MINIRLHF_DEVICE if set (the command line's --device), else the fastest
    available: cuda > mps > cpu."""
    prefer = prefer if prefer is not None else os.environ.get("MINIRLHF_DEVICE") or None
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(tokens[b, t]) under softmax(logits[b, t] / temperature): (B, T, V), (B, T) -> (B, T).

    The one place a token's log-probability is computed (pre-training loss, sampling, PPO, evaluation). Any
    leading shape works: (B, V), (B,) -> (B,) too.
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def predicting_positions(x: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The positions of a (prompt + response) sequence whose outputs PREDICT the response: x[:, P−1:−1].

    A causal model's output at position t is about token t+1. So response token 0, at position P, is predicted at
    position P−1, and the last position predicts nothing (it would be the token after the sequence). For a
    sequence of P + R tokens: (B, P+R, ...) -> (B, R, ...), lined up with the response tokens x[:, P:].
    """
    return x[:, prompt_length - 1 : -1]


def response_logits(model, sequences: torch.Tensor, attention_mask, prompt_length: int) -> torch.Tensor:
    """Logits that predict each response token: (B, P+R) -> (B, R, V). Only those R positions go through the
    unembedding (the prompt's next-token logits are never needed)."""
    h = model.hidden_states(sequences, attention_mask=attention_mask)  # (B, P+R, C)
    return model.lm_head(predicting_positions(h, prompt_length))  # (B, R, V)


def response_values(value_model, sequences: torch.Tensor, attention_mask, prompt_length: int) -> torch.Tensor:
    """V(s_t) for each response token t, s_t = (x, y_<t): a value model's token_values at the predicting
    positions. (B, P+R) -> (B, R)."""
    return predicting_positions(value_model.token_values(sequences, attention_mask=attention_mask), prompt_length)


def make_optimizer(parts, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over [(module, lr), ...], each module at its own learning rate (e.g. a fresh head faster than the trunk).

    Weight decay only on matrices (dim >= 2), not on biases and LayerNorm gains (GPT-2 / nanoGPT); frozen
    parameters (requires_grad False) are left out.
    """
    groups = []
    for module, lr in parts:
        params = [p for p in module.parameters() if p.requires_grad]
        groups.append({"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay})
        groups.append({"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=betas, eps=eps)


def pad_right(rows, pad_value: int, block_size: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of token ids into (ids (B, T), attention_mask (B, T)); refuse rows longer than block_size."""
    if len(rows) == 0:
        raise ValueError("no sequences to batch")
    longest = max(len(r) for r in rows)
    if longest > block_size:
        raise ValueError(f"a sequence is {longest} tokens but the model's context is {block_size}; "
                         "shorten it (fewer new tokens, a shorter prompt) or use a larger block_size")
    ids = torch.full((len(rows), longest), pad_value, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of the rightmost real token (mask == 1) of each row; left or right padding alike."""
    real = attention_mask.bool()
    if not real.any(dim=1).all():
        raise ValueError("a row of attention_mask is all zeros: every sequence needs at least one real token")
    positions = torch.arange(real.shape[1], device=real.device).expand_as(real)  # (B, T)
    return torch.where(real, positions, -1).max(dim=1).values                      # (B,)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated for ``max_len`` positions.

    With it, each generation step feeds only the newest token: its query attends to the cached keys.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's k, v (B, nh, T, hs) at the next positions; return all keys and values so far."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, nh, S, hs)


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention: softmax(Q K^T / sqrt(d_k) + mask) V (Vaswani et al., eq. 1)."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.layer = config.n_head, layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # W_Q, W_K, W_V fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # W_O
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout  # attention-weight dropout inside SDPA (a float, not a module): see set_dropout
        self.attn_impl = "sdpa"  # "sdpa": fused kernel; "manual": the formula written out (same numbers)

    def forward(self, x, mask=None, cache: KVCache | None = None):
        # mask: bool (B, 1, T, S), True = may attend; None = plain causal mask (the fast path)
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, nh, S, hs), S = cached + T
        if self.attn_impl == "manual":
            y = self._manual_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,  # T == 1 with a cache: the one query may see every key
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def _manual_attention(self, q, k, v, mask):
        T, S = q.size(2), k.size(2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, S): QK^T / sqrt(d_k)
        if mask is None and T > 1:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # (T, S) causal
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))  # a masked key gets weight exactly 0
        att = self.attn_dropout(F.softmax(att, dim=-1))  # (B, nh, T, S)
        return att @ v  # (B, nh, T, hs)


class MLP(nn.Module):
    """Position-wise feed-forward network: W_2 GELU(W_1 x), 4x wide (Vaswani et al., eq. 2)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN Transformer block (GPT-2 section 2.3): x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, cache=None):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


@dataclass
class Generation:
    """What ``GPT.generate`` returns. P = prompt_length, R = number of generated positions."""

    sequences: torch.Tensor  # (B, P+R) left-padded prompt + right-padded response (pad_token_id)
    attention_mask: torch.Tensor  # (B, P+R) 1 = real token, 0 = padding
    prompt_length: int  # P
    response_ids: list  # list[list[int]]: new tokens per row, EOS included if produced
    ended: torch.Tensor  # (B,) bool: the row produced EOS
    logprobs: torch.Tensor | None = None  # (B, R) log-prob of each sampled token (0 at padding), or None

    @property
    def response_mask(self) -> torch.Tensor:
        """(B, R) 1 where a response token was generated (EOS included), 0 after the row ended."""
        return self.attention_mask[:, self.prompt_length :]


class GPT(nn.Module):
    """The GPT-2 language model p(x_t | x_<t)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding W_e
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding W_p
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: logits = h W_e^T (GPT-2, as in Press & Wolf 2017)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(N residual layers)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def attn_impl(self) -> str:
        return self.transformer.h[0].attn.attn_impl

    @attn_impl.setter
    def attn_impl(self, value: str):
        """``model.attn_impl = "manual"`` switches every layer to the written-out attention formula."""
        if value not in ("sdpa", "manual"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'manual'; got {value!r}")
        for block in self.transformer.h:
            block.attn.attn_impl = value

    def set_dropout(self, p: float) -> None:
        """Set every dropout probability to p: embedding, residual and attention (the probability SDPA applies to
        the attention weights). ``config.dropout`` keeps the value the model was built with."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {p}")
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
        for block in self.transformer.h:
            block.attn.dropout = p

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (the tied unembedding counted once); optionally without wte and wpe."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    # ---- forward ---------------------------------------------------------------------------------------------

    def forward(self, idx, targets=None, attention_mask=None):
        """Logits (B, T, V) and, with ``targets`` (B, T) already shifted (targets[t] = token after idx[t]),
        the mean next-token cross-entropy over targets != -100; loss is None without targets."""
        self._check_inputs(idx, attention_mask)
        if targets is not None and (not torch.is_tensor(targets) or targets.shape != idx.shape):
            got = tuple(targets.shape) if torch.is_tensor(targets) else type(targets).__name__
            raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}; got {got}")
        logits = self.lm_head(self._trunk(idx, *self._masks(idx, attention_mask)))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def hidden_states(self, idx, attention_mask=None):
        """(B, T, C) final-LayerNorm outputs: the features the unembedding (or a reward head) reads."""
        self._check_inputs(idx, attention_mask)
        return self._trunk(idx, *self._masks(idx, attention_mask))

    def _trunk(self, idx, pos, mask, cache: KVCache | None = None):
        """Embeddings -> blocks -> ln_f. pos: (B, T) or (1, T) position ids; mask: see _masks."""
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))  # (B, T, C)
        for block in tr.h:
            x = block(x, mask, cache)
        if cache is not None:
            cache.length += idx.size(1)
        return tr.ln_f(x)  # (B, T, C)

    def _masks(self, idx, attention_mask=None, past: int = 0):
        """Position ids and attention mask for ``idx`` (B, T) following ``past`` cached positions.

        attention_mask: (B, past + T), 1 = real token, 0 = padding, or None (no padding). Returns
        pos (B, T) = cumsum(mask) - 1 (the i-th real token of a row sits at position i wherever padding is), and
        mask bool (B, 1, T, past + T) = causal AND key is real, or None for the plain causal fast path.
        """
        B, T = idx.shape
        S = past + T
        if attention_mask is None or (past == 0 and bool(attention_mask.all())):
            pos = torch.arange(past, S, device=idx.device).unsqueeze(0)  # (1, T)
            if past == 0 or T == 1:
                return pos, None
            attention_mask = torch.ones(B, S, dtype=torch.long, device=idx.device)
        real = attention_mask.bool()  # (B, S)
        pos = (real.long().cumsum(1) - 1).clamp(min=0)[:, past:]  # (B, T)
        q = torch.arange(past, S, device=idx.device).view(T, 1)  # absolute query positions
        key = torch.arange(S, device=idx.device).view(1, S)
        mask = (key <= q) & real[:, None, None, :]  # (B, 1, T, S): causal and not padding
        # every position may attend to itself, so a padding query never has all keys masked (SDPA would give NaN)
        mask = mask | (key == q)
        return pos, mask

    def _check_inputs(self, idx, attention_mask=None):
        if not torch.is_tensor(idx):
            raise TypeError(f"idx must be a 2-D LongTensor of token ids (B, T); got a {type(idx).__name__}")
        if idx.dtype != torch.long:
            raise TypeError(f"idx must be a LongTensor of token ids; got dtype {idx.dtype} (use idx.long())")
        if idx.dim() != 2:
            raise ValueError(
                f"idx must be 2-D (batch B, time T); got shape {tuple(idx.shape)}"
                + (" (add a batch dimension: idx[None])" if idx.dim() == 1 else "")
            )
        T = idx.size(1)
        if T == 0:
            raise ValueError("idx has no tokens (T = 0); give at least one token per row")
        if T > self.config.block_size:
            raise ValueError(
                f"input is {T} tokens but the model's context (block_size) is {self.config.block_size}; "
                "shorten the input or use a larger block_size"
            )
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = hi if hi >= self.config.vocab_size else lo
            raise ValueError(
                f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size}) (max id found: {hi}, "
                f"min: {lo}); was the tokenizer trained with a larger vocab_size than the model's?"
            )
        if attention_mask is not None and (not torch.is_tensor(attention_mask) or attention_mask.shape != idx.shape):
            got = tuple(attention_mask.shape) if torch.is_tensor(attention_mask) else type(attention_mask).__name__
            raise ValueError(f"attention_mask must have the shape of idx {tuple(idx.shape)}; got {got}")

    # ---- generation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | None = None, pad_token_id: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None,
                 return_logprobs: bool = False) -> Generation:
        """Sample continuations of a batch of prompts, one token per step (temperature 0 = greedy).

        prompts: list of token-id lists (any lengths; left-padded here) or a LongTensor (B, P) without padding.
        Rows that produce ``eos_token_id`` stop (they emit padding after it); generation stops when all have.
        With ``return_logprobs`` each sampled token's log-prob under the distribution actually sampled from
        (temperature-scaled, top-k/top-p filtered; for greedy: the unscaled model distribution).
        """
        pad_id = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
        idx, prompt_mask = self._pad_prompts(prompts, pad_id)  # (B, P), (B, P)
        B, P = idx.shape
        self._check_generate_args(P, max_new_tokens, temperature, top_k, top_p)
        device = idx.device
        was_training = self.training
        self.eval()
        padded = not bool(prompt_mask.all())
        # Inside the loop new tokens always count as real: a row that ended is finished, its later outputs ignored.
        full_mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, max_new_tokens)], 1).bool() if padded else None
        cache = KVCache(self.config, B, P + max_new_tokens, device, self.lm_head.weight.dtype) if use_cache else None

        seq = torch.cat([idx, idx.new_full((B, max_new_tokens), pad_id)], 1)  # (B, P + max_new)
        ended = torch.zeros(B, dtype=torch.bool, device=device)
        alive = torch.ones(B, max_new_tokens, dtype=torch.bool, device=device)  # token t of row b is real
        logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
        pos, mask = self._masks(idx, prompt_mask if padded else None)
        x = self._trunk(idx, pos, mask, cache)[:, -1]  # (B, C) features of the last prompt token
        if padded:
            next_pos = prompt_mask.sum(1, keepdim=True)  # (B, 1) position of the first new token
        R = 0
        for t in range(max_new_tokens):
            logits = self.lm_head(x)  # (B, V)
            tok, lp = _sample(logits, temperature, top_k, top_p, generator, return_logprobs)
            if eos_token_id is not None:
                tok = tok.masked_fill(ended, pad_id)
                alive[:, t] = ~ended
            seq[:, P + t] = tok
            if return_logprobs:
                logprobs[:, t] = lp.masked_fill(ended, 0.0)
            R = t + 1
            if eos_token_id is not None:
                ended |= tok == eos_token_id
                if bool(ended.all()):
                    break
            if t == max_new_tokens - 1:
                break
            S = P + t + 1  # tokens in the sequence now
            if use_cache:  # feed only the newest token; its query attends to the cached keys
                if padded:
                    pos_t, mask_t = next_pos + t, full_mask[:, None, None, :S]  # (B, 1), (B, 1, 1, S)
                else:
                    pos_t, mask_t = torch.full((1, 1), S - 1, device=device), None
                x = self._trunk(tok[:, None], pos_t, mask_t, cache)[:, -1]
            else:  # recompute the whole sequence every step: what the cache saves
                pos_t, mask_t = self._masks(seq[:, :S], full_mask[:, :S] if padded else None)
                x = self._trunk(seq[:, :S], pos_t, mask_t)[:, -1]
        self.train(was_training)

        alive = alive[:, :R]
        response_ids = [seq[b, P : P + R][alive[b]].tolist() for b in range(B)]
        return Generation(
            sequences=seq[:, : P + R],
            attention_mask=torch.cat([prompt_mask, alive.long()], 1),
            prompt_length=P,
            response_ids=response_ids,
            ended=ended,
            logprobs=logprobs[:, :R] if return_logprobs else None,
        )

    def _pad_prompts(self, prompts, pad_id: int):
        """list[list[int]] or LongTensor (B, P) -> left-padded ids (B, P) and mask (B, P) on the model's device."""
        device = self.lm_head.weight.device
        if torch.is_tensor(prompts):
            self._check_inputs(prompts)
            idx = prompts.to(device)
            return idx, torch.ones_like(idx)
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, (list, tuple)) for p in prompts):
            raise TypeError("prompts must be a non-empty list of token-id lists, e.g. [[5, 7, 9], [5, 2]], "
                            "or a LongTensor (B, P)")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token; got an empty prompt")
        P = max(len(p) for p in prompts)
        idx = torch.tensor([[pad_id] * (P - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
        self._check_inputs(idx, mask)
        return idx, mask

    def _check_generate_args(self, P, max_new_tokens, temperature, top_k, top_p):
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}")
        if P + max_new_tokens > self.config.block_size:
            raise ValueError(
                f"prompt length {P} + max_new_tokens {max_new_tokens} = {P + max_new_tokens} exceeds the model's "
                f"context (block_size) of {self.config.block_size}; shorten the prompt or ask for fewer tokens"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None; got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None; got {top_p}")


def _sample(logits, temperature, top_k, top_p, generator, need_logprobs=True):
    """One token per row from logits (B, V); returns tokens (B,) and their log-probs (B,) (None if not needed)."""
    logits = logits.float()
    if temperature == 0:  # greedy
        tok = logits.argmax(-1)  # (B,)
        return tok, token_logprobs(logits, tok) if need_logprobs else None
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:  # nucleus: the smallest set of top tokens with mass >= top_p
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, -1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = F.log_softmax(logits, -1).exp()  # (B, V) π(v | ·)
    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
    return tok, token_logprobs(logits, tok) if need_logprobs else None
