"""Byte-level BPE tokenizer and the chat format, as GPT-2 and InstructGPT use them.

GPT-2 (Radford et al. 2019, §2.2 "Input Representation") runs BPE on *bytes*, not Unicode characters: the
256 byte values are the initial alphabet, so every string (emoji, CJK, stray control characters) can be
encoded and decoded back exactly, and no token is ever "unknown". We train such a tokenizer on the toy
world's corpus with the `tokenizers` library and wrap it as a `transformers.PreTrainedTokenizerFast`,
so `save_pretrained`, `apply_chat_template` and `decode(..., skip_special_tokens=True)` work as usual.

Special tokens (never split by BPE, and they take the first ids, in this order):

    id 0  EOS       "<|endoftext|>"   ends a document AND ends an assistant turn
    id 1  PAD       "<|pad|>"         fills batches; distinct from EOS so that a padded position
                                      is never mistaken for "the model chose to stop"
    id 2  USER      "<|user|>"        starts a user turn
    id 3  ASSISTANT "<|assistant|>"   starts an assistant turn (the "generation prompt")

then the 256 byte tokens (ids 4..259), then the learned merges.

Chat format (InstructGPT §3.2 trains on prompt/response pairs; this is our way of writing one as text):

    "<|user|>what colour does bobo like?\\n<|assistant|>bobo likes red.<|endoftext|>"

Turns are joined with "\\n"; with `add_generation_prompt=True` the text ends with "\\n<|assistant|>", where
the model takes over. A prompt with a history (earlier user/assistant turns) is written the same way, turn
by turn: `chat_prompt(prompt)` is the one place that turns a prompt into the text x. Because "<|assistant|>"
is a special token, the prompt's ids followed by the response's ids are exactly the ids of prompt + response
as one string: SFT, reward modelling and PPO can tokenise prompt and response separately and concatenate.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = [EOS, PAD, USER, ASSISTANT]  # list order = token id: EOS=0, PAD=1, USER=2, ASSISTANT=3
SPECIAL_IDS = {token: i for i, token in enumerate(SPECIAL_TOKENS)}

N_BYTES = 256  # the byte-level alphabet: every string is a sequence of these
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + N_BYTES  # 260: specials + bytes, zero merges
ROLES = ("user", "assistant")

# The jinja twin of `format_chat`, stored in the tokenizer so `tok.apply_chat_template` gives the same text.
# One expression per block and explicit '\n' literals, so jinja's whitespace rules cannot add or drop newlines.
CHAT_TEMPLATE = (
    "{%- if messages | length == 0 -%}"
    '{{ raise_exception(\'messages is empty; pass at least one {"role": "user", "content": ...} message\') }}'
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is not string -%}"
    "{{ raise_exception('message content must be a str') }}"
    "{%- endif -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '<|user|>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>' + message['content'] + '<|endoftext|>' }}"
    "{%- else -%}"
    '{{ raise_exception(\'message role must be "user" or "assistant"\') }}'
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if messages[-1]['role'] != 'user' -%}"
    "{{ raise_exception('add_generation_prompt=True needs the last message to be the user\\'s') }}"
    "{%- endif -%}"
    "{{ '\\n<|assistant|>' }}"
    "{%- endif -%}"
)


# ----------------------------------------------------------------------------------------------------------
# Chat format (plain strings: no tokenizer needed)


def _check_messages(messages: Sequence[dict], add_generation_prompt: bool) -> None:
    """Raise a ValueError/TypeError naming the first malformed message, and how to fix it."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"messages must be a list of dicts like {{'role': 'user', 'content': '...'}}, "
            f"got {type(messages).__name__}"
        )
    if len(messages) == 0:
        raise ValueError("messages is empty; pass at least one {'role': 'user', 'content': ...} message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TypeError(f"messages[{i}] must be a dict with keys 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(
                f"messages[{i}] has role {message['role']!r}; the role must be 'user' or 'assistant'"
            )
        if not isinstance(message["content"], str):
            raise TypeError(
                f"messages[{i}]['content'] must be a str, got {type(message['content']).__name__}"
            )
        for special in SPECIAL_TOKENS:
            if special in message["content"]:
                raise ValueError(
                    f"messages[{i}]['content'] contains the special token {special!r}; "
                    "the chat markers are added by format_chat, remove it from the content"
                )
    if add_generation_prompt and messages[-1]["role"] != "user":
        raise ValueError(
            "add_generation_prompt=True needs the last message to be the user's (the model answers it); "
            "pass add_generation_prompt=False to format a finished conversation"
        )


def format_chat(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """Write a conversation as text: "<|user|>q\\n<|assistant|>a<|endoftext|>", turns joined by "\\n".

    With add_generation_prompt=True (the default) the text ends with "\\n<|assistant|>": the model's cue to
    answer. `tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` gives the same.
    """
    _check_messages(messages, add_generation_prompt)
    turns = []
    for message in messages:
        if message["role"] == "user":
            turns.append(USER + message["content"])
        else:  # assistant: its turn ends with EOS, the token the policy learns to emit when done
            turns.append(ASSISTANT + message["content"] + EOS)
    text = "\n".join(turns)
    if add_generation_prompt:
        text += "\n" + ASSISTANT
    return text


def chat_messages(prompt) -> list[dict]:
    """The conversation a prompt x stands for: its earlier turns (oldest first), then its user message.

    prompt: a user message (str); a world Prompt (`.history`: (user, assistant) pairs, then `.text`); or a prompt
    dict as stored in JSONL files ({"text": ..., "history": [[user, assistant], ...]}, history optional).
    """
    if isinstance(prompt, str):
        text, history = prompt, ()
    elif isinstance(prompt, dict) and "text" in prompt:
        text, history = prompt["text"], prompt.get("history") or ()
    elif hasattr(prompt, "text"):
        text, history = prompt.text, getattr(prompt, "history", ())
    else:
        raise TypeError(f"a prompt must be a user message (str), a world Prompt or a dict with 'text'; "
                        f"got {type(prompt).__name__}")
    messages = []
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": text}]


def chat_prompt(prompt) -> str:
    """THE prompt x every stage feeds the model (SFT, comparisons, RM, PPO, evaluation, chat), ready to continue:
    "<|user|>q\\n<|assistant|>", preceded by the earlier turns of a multi-turn prompt (see `chat_messages`)."""
    return format_chat(chat_messages(prompt), add_generation_prompt=True)


def encode_chat_prompt(tok: PreTrainedTokenizerFast, prompt) -> list[int]:
    """Token ids of `chat_prompt(prompt)`; the last id is always ASSISTANT's."""
    return tok.encode(chat_prompt(prompt), add_special_tokens=False)


# ----------------------------------------------------------------------------------------------------------
# Training, loading, fingerprinting


def _collect_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings (e.g. a list of documents), not one string")
    collected = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}; every training text must be a str")
        collected.append(text)
    if not any(collected):
        raise ValueError(
            "train_tokenizer got no text (empty input); pass the corpus, e.g. [d.text for d in docs]"
        )
    return collected


def _wrap(backend: Tokenizer, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a transformers tokenizer with our specials and chat template."""
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,  # "a ." must decode to "a .", not "a.": exact round trips
        **kwargs,
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    min_frequency: int = 2,
    *,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2 style byte-level BPE on `texts` (deterministic: same texts, same vocabulary).

    vocab_size counts everything: 4 specials + 256 bytes + learned merges (so at least 260).
    min_frequency: a pair must occur this often to be merged.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the 4 special tokens and 256 bytes alone need "
            f"{MIN_VOCAB_SIZE}; use vocab_size >= {MIN_VOCAB_SIZE} (1024 suits the toy world)"
        )
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    corpus = _collect_texts(texts)

    backend = Tokenizer(models.BPE())  # no unk token: bytes cover everything
    # GPT-2's regex splits words/numbers/punctuation; add_prefix_space=False keeps encode(a)+encode(b)
    # == encode(a+b) at special-token boundaries (nothing is inserted at the start of a segment).
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Registered before training so that specials inside the corpus are cut out, never merged into words.
    backend.add_special_tokens(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,  # ids 0..3, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even ones not in the corpus
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    tok = _wrap(backend, model_max_length)
    _check_special_ids(tok, where="the trained tokenizer")
    return tok


def _check_special_ids(tok: PreTrainedTokenizerFast, where: str) -> None:
    got = {token: tok.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if got != SPECIAL_IDS:
        raise ValueError(f"{where} has special token ids {got}; minirlhf expects {SPECIAL_IDS}")


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with `tok.save_pretrained(path)` (local folder only; never the model hub)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder {str(folder)!r} does not exist; save one with tok.save_pretrained(folder)"
        )
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {str(folder)!r}: is this a folder written by tok.save_pretrained?"
        )
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    _check_special_ids(tok, where=f"the tokenizer in {str(folder)!r}")
    if tok.pad_token != PAD or tok.eos_token != EOS:
        raise ValueError(
            f"the tokenizer in {str(folder)!r} has eos_token={tok.eos_token!r}, pad_token={tok.pad_token!r}; "
            f"minirlhf expects {EOS!r} and {PAD!r}: train it with minirlhf.tokenizer.train_tokenizer"
        )
    if not tok.chat_template:  # older transformers may not save it: restore ours
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tokenizer_fingerprint(tok: PreTrainedTokenizerFast) -> str:
    """A short sha256 (16 hex digits) of vocab + merges + special tokens.

    Two tokenizers with the same fingerprint map every text to the same ids; checkpoints store it so that
    loading a model with a different tokenizer fails loudly instead of producing gibberish.
    """
    state = json.loads(tok.backend_tokenizer.to_str())
    model = state["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    specials = sorted((t["id"], t["content"], bool(t["special"])) for t in state.get("added_tokens", []))
    payload = json.dumps(
        {
            "type": model.get("type"),
            "vocab": sorted(model["vocab"].items(), key=lambda kv: kv[1]),
            "merges": merges,
            "specials": specials,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
