"""Talking to a model in the chat format: batched responses to prompts, and a multi-turn conversation.

Comparison data and the labeling UI sample answers through `generate_responses`, the chat widget and the CLI
through `chat_turn`. Evaluation (`evaluate.sample_answers`) and PPO's rollouts call `model.generate` themselves
because they also need the token sequences, to compute log-probabilities and KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minirlhf.model import GPT
from minirlhf.tokenizer import encode_chat_prompt, format_chat


@dataclass
class Response:
    text: str                 # decoded without special tokens
    token_ids: list[int]      # the new tokens, EOS included when the model produced it
    ended: bool               # True if the model emitted EOS (a finished answer)


@torch.no_grad()
def generate_responses(model: GPT, tokenizer, prompts: list, max_new_tokens: int = 32,
                       temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                       generator: torch.Generator | None = None, batch_size: int = 64) -> list[Response]:
    """Answer each prompt in one chat turn. A prompt: a user message (plain text, no chat markers), or a world
    Prompt, whose earlier turns (its history) come first (`tokenizer.chat_prompt`)."""
    if not prompts:
        raise ValueError("no prompts given")
    responses: list[Response] = []
    for i in range(0, len(prompts), batch_size):
        chunk = [encode_chat_prompt(tokenizer, p) for p in prompts[i:i + batch_size]]
        out = model.generate(chunk, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             generator=generator)
        for ids, ended in zip(out.response_ids, out.ended.tolist()):
            responses.append(Response(tokenizer.decode(ids, skip_special_tokens=True).strip(), list(ids), bool(ended)))
    return responses


@torch.no_grad()
def chat_turn(model: GPT, tokenizer, messages: list[dict], max_new_tokens: int = 48, temperature: float = 0.7,
              top_k: int | None = None, generator: torch.Generator | None = None) -> tuple[str, list[dict]]:
    """One assistant turn of a multi-turn conversation. Returns the reply and the extended conversation.

    Older turns are dropped from the front when the conversation outgrows the model's context window.
    """
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("the conversation must end with a user message")
    block = model.config.block_size
    kept = list(messages)
    while True:
        ids = tokenizer.encode(format_chat(kept, add_generation_prompt=True), add_special_tokens=False)
        if len(ids) + max_new_tokens <= block or len(kept) == 1:
            break
        kept = kept[2:] if len(kept) > 2 else kept[-1:]
    if len(ids) + max_new_tokens > block:
        raise ValueError(f"the message is {len(ids)} tokens; with {max_new_tokens} new tokens that exceeds the "
                         f"model's context of {block}. Write a shorter message.")
    out = model.generate([ids], max_new_tokens, temperature=temperature, top_k=top_k,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=generator)
    reply = tokenizer.decode(out.response_ids[0], skip_special_tokens=True).strip()
    return reply, list(messages) + [{"role": "assistant", "content": reply}]
