"""Byte-level BPE tokenizer and chat format (hermetic: the tokenizer is trained in-process in < 1 s)."""

import random

import pytest

from minirlhf.tokenizer import (
    ASSISTANT,
    EOS,
    MIN_VOCAB_SIZE,
    PAD,
    USER,
    chat_messages,
    chat_prompt,
    encode_chat_prompt,
    format_chat,
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
)

NAMES = ["bobo", "kiki", "lulu", "momo", "zaza", "pip", "tutu", "wawa"]
COLOURS = ["red", "blue", "green", "yellow", "purple"]
FOODS = ["apples", "fish", "seeds", "honey", "bread"]


def corpus() -> list[str]:
    """A few hundred short sentences, like the toy world's documents."""
    rng = random.Random(0)
    texts = []
    for _ in range(300):
        name, colour, food = rng.choice(NAMES), rng.choice(COLOURS), rng.choice(FOODS)
        texts.append(f"{name} likes {colour}. {name} eats {food}.\nwhat colour does {name} like? {colour}.")
    texts.append("first document" + EOS + "second document")  # a special token inside the corpus
    return texts


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(), vocab_size=400)


def unicode_samples() -> list[str]:
    rng = random.Random(1)
    random_bytes = [bytes(rng.randrange(256) for _ in range(64)) for _ in range(5)]
    return [
        "bobo likes red.",
        "héllo wörld, ça va? ñandú",
        "emoji 😀🐍👩‍👩‍👧 and flags 🇫🇷",
        "中文字符 日本語のテキスト 한국어",
        "line one\nline two\r\n\ttabbed\t\tend\n\n",
        "  leading and trailing spaces  ",
        "",
        "\x00\x01\x7f control characters",
        "ends with the special " + EOS,
        USER + "q" + "\n" + ASSISTANT + "a" + EOS + PAD,
        *[b.decode("utf-8", errors="replace") for b in random_bytes],
        *[b.decode("latin-1") for b in random_bytes],
    ]


@pytest.mark.parametrize("text", unicode_samples())
def test_round_trip_any_unicode(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_unseen_characters_are_bytes_not_unknown(tok):
    ids = tok.encode("😀", add_special_tokens=False)
    assert len(ids) == 4  # 4 UTF-8 bytes, none seen in training: one byte token each
    assert tok.unk_token_id is None


def test_bpe_learns_the_corpus_words(tok):
    # Byte-level BPE on a small-vocabulary world lands near word level.
    assert len(tok.encode(" likes", add_special_tokens=False)) == 1
    assert MIN_VOCAB_SIZE < len(tok) <= 400  # merges stop early when no pair occurs twice any more


def test_special_tokens_are_single_tokens_with_documented_ids(tok):
    for token, expected_id in [(EOS, 0), (PAD, 1), (USER, 2), (ASSISTANT, 3)]:
        assert tok.encode(token, add_special_tokens=False) == [expected_id]
        assert tok.convert_ids_to_tokens(expected_id) == token
    assert tok.eos_token == EOS and tok.eos_token_id == 0
    assert tok.pad_token == PAD and tok.pad_token_id == 1
    assert tok.pad_token_id != tok.eos_token_id
    assert set(tok.all_special_tokens) >= {EOS, PAD, USER, ASSISTANT}


def test_specials_are_cut_out_of_surrounding_text(tok):
    ids = tok.encode("a" + USER + "b" + EOS, add_special_tokens=False)
    assert ids[1] == 2 and ids[-1] == 0 and len(ids) == 4
    # a special inside the training corpus was never merged into a learned token
    learned = [t for t in tok.get_vocab() if t not in (EOS, PAD, USER, ASSISTANT)]
    assert not any("endoftext" in t or "<|" in t for t in learned)


def test_encode_adds_nothing(tok):
    assert tok("bobo")["input_ids"] == tok.encode("bobo", add_special_tokens=False)


def test_decode_skips_specials(tok):
    ids = encode_chat_prompt(tok, "what colour does bobo like?") + tok.encode("red.") + [tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "what colour does bobo like?\nred."


@pytest.mark.parametrize(
    "question, response",
    [
        ("what colour does bobo like?", "bobo likes red."),
        ("what colour does bobo like?", " bobo likes red."),  # leading space
        ("what does kiki eat?", "\nkiki eats fish.\n"),
        ("how are you? 😀", "fine 😀, thanks"),
        ("", "x"),
        ("tell me about lulu", "lulu likes green" + EOS),
        ("q", "日本語"),
    ],
)
def test_prompt_then_response_tokenises_like_the_joined_text(tok, question, response):
    prompt_ids = encode_chat_prompt(tok, question)
    assert prompt_ids[-1] == tok.convert_tokens_to_ids(ASSISTANT)
    response_ids = tok.encode(response, add_special_tokens=False)
    joined = tok.encode(chat_prompt(question) + response, add_special_tokens=False)
    assert prompt_ids + response_ids == joined


def test_chat_format_matches_the_contract():
    assert chat_prompt("what colour does bobo like?") == "<|user|>what colour does bobo like?\n<|assistant|>"
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert format_chat(messages) == "<|user|>q1\n<|assistant|>a1<|endoftext|>\n<|user|>q2\n<|assistant|>"
    assert (
        format_chat(messages[:2], add_generation_prompt=False) == "<|user|>q1\n<|assistant|>a1<|endoftext|>"
    )
    assert format_chat(messages[:1], add_generation_prompt=False) == "<|user|>q1"


@pytest.mark.parametrize(
    "messages, add_generation_prompt",
    [
        ([{"role": "user", "content": "what colour does bobo like?"}], True),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], False),
        (
            [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1\n"},
                {"role": "user", "content": " q2 "},
            ],
            True,
        ),
        ([{"role": "user", "content": ""}], True),
    ],
)
def test_apply_chat_template_equals_format_chat(tok, messages, add_generation_prompt):
    expected = format_chat(messages, add_generation_prompt=add_generation_prompt)
    got = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert got == expected


@pytest.mark.parametrize(
    "messages, add_generation_prompt, error, match",
    [
        ([], True, ValueError, "empty"),
        ([{"role": "system", "content": "x"}], True, ValueError, "role must be 'user' or 'assistant'"),
        ([{"role": "user", "content": 3}], True, TypeError, "must be a str"),
        ([{"role": "user"}], True, TypeError, "'role' and 'content'"),
        ("hello", True, TypeError, "list of dicts"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            True,
            ValueError,
            "add_generation_prompt=False",
        ),
        ([{"role": "user", "content": "hi" + ASSISTANT}], True, ValueError, "special token"),
    ],
)
def test_format_chat_rejects_malformed_messages(messages, add_generation_prompt, error, match):
    with pytest.raises(error, match=match):
        format_chat(messages, add_generation_prompt=add_generation_prompt)


def test_chat_template_rejects_bad_roles(tok):
    with pytest.raises(Exception, match="user.*assistant"):
        tok.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


def test_save_and_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    for text in unicode_samples() + [chat_prompt("what colour does bobo like?") + "bobo likes red." + EOS]:
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (0, 1)
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    messages = [{"role": "user", "content": "q"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == format_chat(
        messages
    )


def test_training_is_deterministic():
    a, b = train_tokenizer(corpus(), vocab_size=400), train_tokenizer(corpus(), vocab_size=400)
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()  # same merges, in the same order
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


def test_fingerprint_tells_tokenizers_apart(tok):
    other = train_tokenizer(corpus()[:100], vocab_size=300)
    fingerprint = tokenizer_fingerprint(tok)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert tokenizer_fingerprint(other) != fingerprint


def test_generator_input_is_accepted():
    tok = train_tokenizer((t for t in corpus()), vocab_size=300)
    assert len(tok) == 300


@pytest.mark.parametrize(
    "texts, kwargs, error, match",
    [
        ([], {}, ValueError, "empty"),
        (["", ""], {}, ValueError, "empty"),
        ("just one string", {}, TypeError, "iterable of strings"),
        (["ok", 3], {}, TypeError, r"texts\[1\]"),
        (["ok"], {"vocab_size": MIN_VOCAB_SIZE - 1}, ValueError, "vocab_size"),
        (["ok"], {"min_frequency": 0}, ValueError, "min_frequency"),
    ],
)
def test_train_tokenizer_errors(texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_tokenizer(texts, **kwargs)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------
# One function turns a prompt, history included, into the chat prompt x


TWO_TURNS = [
    {"role": "user", "content": "zuzu likes red and eats figs . what colour does zuzu like ?"},
    {"role": "assistant", "content": "zuzu likes red ."},
    {"role": "user", "content": "what does zuzu eat ?"},
]


def test_chat_messages_of_a_string_a_prompt_and_a_prompt_dict():
    from minirlhf.world import Prompt

    history = ((TWO_TURNS[0]["content"], TWO_TURNS[1]["content"]),)
    prompt = Prompt("t-0", "followup", TWO_TURNS[2]["content"], "test", {}, history)
    as_json = {"text": prompt.text, "history": [list(turn) for turn in history]}  # as read back from JSONL
    assert chat_messages(prompt) == chat_messages(as_json) == TWO_TURNS
    assert chat_messages("hi") == chat_messages({"text": "hi"}) == [{"role": "user", "content": "hi"}]
    with pytest.raises(TypeError, match="Prompt"):
        chat_messages(42)


def test_two_turn_chat_prompt_equals_the_chat_template(tok):
    from minirlhf.world import Prompt

    prompt = Prompt("t-0", "followup", TWO_TURNS[2]["content"], "test", {},
                    ((TWO_TURNS[0]["content"], TWO_TURNS[1]["content"]),))
    text = chat_prompt(prompt)
    assert text == ("<|user|>zuzu likes red and eats figs . what colour does zuzu like ?\n"
                    "<|assistant|>zuzu likes red .<|endoftext|>\n<|user|>what does zuzu eat ?\n<|assistant|>")
    assert text == tok.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
    template_ids = tok.apply_chat_template(TWO_TURNS, add_generation_prompt=True, return_dict=False)
    assert encode_chat_prompt(tok, prompt) == template_ids
    assert encode_chat_prompt(tok, prompt).count(tok.convert_tokens_to_ids(ASSISTANT)) == 2
    assert chat_prompt(TWO_TURNS[2]["content"]) == "<|user|>what does zuzu eat ?\n<|assistant|>"  # no history
