"""Checkpoints: exact round trip, refusals on mismatch, and atomic saves (no half-written folder, ever)."""

import json
import random

import pytest
import safetensors.torch
import torch

import minirlhf.checkpoint as checkpoint
from minirlhf.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from minirlhf.model import GPT, get_config
from minirlhf.tokenizer import format_chat, tokenizer_fingerprint, train_tokenizer


def corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names, colours = ["bobo", "kiki", "lulu", "momo"], ["red", "blue", "green"]
    return [f"{rng.choice(names)} likes {rng.choice(colours)}." for _ in range(200)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(), vocab_size=300)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=300))


def logits_of(model, idx):
    model.eval()
    with torch.no_grad():
        return model(idx)[0]


def test_round_trip_gives_identical_logits(tmp_path, model, tok):
    idx = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    path = save_checkpoint(
        tmp_path / "sft", model, tok, stage="sft", metadata={"seed": 3, "metrics": {"loss": 1.5}}
    )
    assert path == tmp_path / "sft"
    loaded, loaded_tok, meta = load_checkpoint(path, expect_config=model.config)
    assert type(loaded) is GPT and loaded.config == model.config
    assert not loaded.training
    assert torch.equal(logits_of(loaded, idx), logits_of(model, idx))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after loading
    # the tokenizer came back too, identical
    assert tokenizer_fingerprint(loaded_tok) == tokenizer_fingerprint(tok)
    messages = [{"role": "user", "content": "what colour does bobo like?"}]
    assert loaded_tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    ) == format_chat(messages)
    assert meta["stage"] == "sft" and meta["seed"] == 3 and meta["metrics"] == {"loss": 1.5}
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert meta["created"].endswith("+00:00") and meta["minirlhf_version"]
    assert read_metadata(path) == meta


def test_folder_layout_and_config_json(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model, tok)
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"model.safetensors", "config.json", "metadata.json", "tokenizer.json"} <= files
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["format"] == "minirlhf-checkpoint" and config["version"] == 1
    assert config["architecture"] == "GPT" and config["gpt_config"]["n_embd"] == model.config.n_embd
    # the tied unembedding is stored once
    stored = safetensors.torch.load_file(tmp_path / "ckpt" / "model.safetensors")
    assert ("lm_head.weight" in stored) != ("transformer.wte.weight" in stored)
    assert read_metadata(tmp_path / "ckpt")["stage"] == "pretrained"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or backup folder left


def test_no_pickle_anywhere(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model, tok)
    for file in (tmp_path / "ckpt").rglob("*"):
        assert file.suffix not in {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}, file
        assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"
    with open(checkpoint.__file__, encoding="utf-8") as f:
        source = f.read()
    assert "torch.load" not in source and "import pickle" not in source


def test_without_tokenizer(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model)
    loaded, loaded_tok, meta = load_checkpoint(tmp_path / "ckpt")
    assert loaded_tok is None and meta["tokenizer_fingerprint"] is None
    _, given_tok, _ = load_checkpoint(tmp_path / "ckpt", tokenizer=tok)  # nothing stored to compare with
    assert given_tok is tok


def test_overwrite_replaces_the_checkpoint(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 1})
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 2})
    loaded, _, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["seed"] == 2
    assert torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_config_mismatch_is_refused_listing_each_field(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model, tok)
    expected = get_config("tiny", vocab_size=300, n_embd=64, n_layer=3)
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "ckpt", expect_config=expected)
    message = str(info.value)
    assert f"n_embd: checkpoint {model.config.n_embd}, expected 64" in message
    assert f"n_layer: checkpoint {model.config.n_layer}, expected 3" in message
    assert "block_size" not in message


def test_tokenizer_mismatch_is_refused(tmp_path, model, tok):
    save_checkpoint(tmp_path / "ckpt", model, tok)
    other = train_tokenizer(corpus(seed=1)[:50] + ["something else entirely"], vocab_size=300)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    with pytest.raises(ValueError, match="tokenizer does not match"):
        load_checkpoint(tmp_path / "ckpt", tokenizer=other)
    _, same, _ = load_checkpoint(tmp_path / "ckpt", tokenizer=tok)
    assert same is tok


def test_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, tok):
    small = GPT(get_config("tiny", vocab_size=64))
    save_checkpoint(tmp_path / "ckpt", small)
    with pytest.raises(ValueError, match="vocab_size=64"):
        load_checkpoint(tmp_path / "ckpt", tokenizer=tok)


def interrupt(exception):
    def fail(*args, **kwargs):
        raise exception

    return fail


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["weights", "metadata", "tokenizer"])
def test_interrupted_first_save_leaves_nothing(tmp_path, model, tok, monkeypatch, exception, where):
    target = {"weights": "save_file", "metadata": "_write_text", "tokenizer": None}[where]
    if target is None:
        monkeypatch.setattr(type(tok), "save_pretrained", interrupt(exception))
    else:
        monkeypatch.setattr(checkpoint, target, interrupt(exception))
    with pytest.raises(type(exception)):
        save_checkpoint(tmp_path / "ckpt", model, tok)
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor its temp folder


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_old_checkpoint_survives_a_failed_overwrite(tmp_path, model, tok, monkeypatch, exception):
    idx = torch.arange(8).unsqueeze(0)
    save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    with torch.no_grad():
        changed = logits_of(model, idx)
        model.transformer.wte.weight.add_(1.0)

    written = []
    real_write_text = checkpoint._write_text

    def write_then_fail(path, text):  # the metadata writer: config.json goes through, metadata.json fails
        written.append(path.name)
        if path.name == "metadata.json":
            raise exception
        real_write_text(path, text)

    monkeypatch.setattr(checkpoint, "_write_text", write_then_fail)
    with pytest.raises(type(exception)):
        save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 2})
    assert written == ["config.json", "metadata.json"]  # it failed midway, after the weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before
    loaded, _, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["seed"] == 1
    assert torch.equal(logits_of(loaded, idx), changed)


def test_old_checkpoint_survives_a_failed_swap(tmp_path, model, tok, monkeypatch):
    """Even the last step, renaming the new folder into place, may fail: the old folder comes back."""
    save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 1})
    real_replace = checkpoint.os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", model, tok, metadata={"seed": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert read_metadata(tmp_path / "ckpt")["seed"] == 1


def test_save_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path, model):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a minirlhf checkpoint"):
        save_checkpoint(tmp_path / "runs", model)
    assert (tmp_path / "runs" / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "metadata, stage, error, match",
    [
        ({"stage": "sft"}, "pretrained", ValueError, "written by save_checkpoint"),
        ({"seed": object()}, "pretrained", TypeError, "JSON"),
        (None, "", ValueError, "stage"),
    ],
)
def test_save_rejects_bad_arguments_before_writing(tmp_path, model, metadata, stage, error, match):
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path / "ckpt", model, stage=stage, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_metadata_accepts_tensor_scalars(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", model, metadata={"metrics": {"loss": torch.tensor(0.25)}})
    assert read_metadata(tmp_path / "ckpt")["metrics"] == {"loss": 0.25}


def test_save_rejects_a_model_without_config(tmp_path):
    with pytest.raises(TypeError, match="config"):
        save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(2, 2))


def test_missing_folder_and_files_are_named(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(tmp_path / "sft", model)
    for name in ["model.safetensors", "config.json", "metadata.json"]:
        (tmp_path / "sft" / name).rename(tmp_path / name)
        with pytest.raises(
            FileNotFoundError, match=f"no {name} in .*sft: is this a minirlhf checkpoint folder"
        ):
            load_checkpoint(tmp_path / "sft")
        (tmp_path / name).rename(tmp_path / "sft" / name)
    load_checkpoint(tmp_path / "sft")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2]", "config.json should hold a JSON object"),
        ('{"format": "something-else", "version": 1}', "not a minirlhf checkpoint"),
        ('{"format": "minirlhf-checkpoint", "version": 99}', "version 99"),
        ('{"format": "minirlhf-checkpoint", "version": 1, "architecture": "GPT"}', "gpt_config"),
        (
            '{"format": "minirlhf-checkpoint", "version": 1, "architecture": "Llama", "gpt_config": {}}',
            "Llama",
        ),
        (
            '{"format": "minirlhf-checkpoint", "version": 1, "architecture": "GPT", "gpt_config": {"wings": 2}}',
            "wings",
        ),
    ],
)
def test_malformed_config_json_is_a_value_error_naming_the_file(tmp_path, model, content, match):
    save_checkpoint(tmp_path / "ckpt", model)
    (tmp_path / "ckpt" / "config.json").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_checkpoint(tmp_path / "ckpt")
    assert "config.json" in str(info.value)


def test_malformed_metadata_json_is_a_value_error(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", model)
    (tmp_path / "ckpt" / "metadata.json").write_text("{oops")
    with pytest.raises(ValueError, match="metadata.json is not valid JSON"):
        read_metadata(tmp_path / "ckpt")


def test_weights_that_do_not_fit_are_refused(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", model)
    file = tmp_path / "ckpt" / "model.safetensors"
    state = safetensors.torch.load_file(file)
    state["extra.weight"] = torch.zeros(2)
    state.pop("transformer.ln_f.bias")
    safetensors.torch.save_file(state, file)
    with pytest.raises(
        ValueError, match=r"missing keys \['transformer.ln_f.bias'\], unexpected keys \['extra.weight'\]"
    ):
        load_checkpoint(tmp_path / "ckpt")
    file.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_device_argument(tmp_path, model):
    save_checkpoint(tmp_path / "ckpt", model)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert next(loaded.parameters()).device == torch.device("cpu")


def test_reward_model_round_trip(tmp_path, tok):
    """config.json "extra" carries RewardModel's own constructor arguments: RewardModel(GPTConfig(...), **extra)."""
    reward = pytest.importorskip("minirlhf.reward")
    torch.manual_seed(0)
    rm = reward.RewardModel(get_config("tiny", vocab_size=300), head_std=0.3)
    with torch.no_grad():
        rm.reward_bias.fill_(0.5)  # a buffer, saved with the weights
    save_checkpoint(tmp_path / "rm", rm, tok, stage="rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architecture"] == "RewardModel" and config["extra"] == {"head_std": 0.3, "readout": "last",
                                                                                 "flags": [], "surprise": 0.0}
    loaded, _, meta = load_checkpoint(tmp_path / "rm", expect_config=rm.config)
    assert type(loaded) is reward.RewardModel and meta["stage"] == "rm" and loaded.head_std == 0.3
    idx = torch.randint(0, 300, (3, 7), generator=torch.Generator().manual_seed(2))
    rm.eval()
    with torch.no_grad():
        assert torch.equal(loaded(idx), rm(idx))


SAVE_AN_ENSEMBLE = """
import sys, torch
from minirlhf.checkpoint import save_checkpoint
from minirlhf.ensemble import RewardEnsemble
from minirlhf.model import get_config
torch.manual_seed(0)
save_checkpoint(sys.argv[1], RewardEnsemble(get_config("tiny"), n_members=3), None, stage="rm")
"""


def test_the_same_weights_give_the_same_bytes_in_every_process(tmp_path):
    # three GPT trunks tie three pairs of weights; the header must not depend on a process's hash order
    import os
    import subprocess
    import sys

    from minirlhf.ensemble import RewardEnsemble

    files = []
    for hash_seed in ("1", "2", "3"):
        out = tmp_path / f"rm-{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", SAVE_AN_ENSEMBLE, str(out)], check=True, env=env)
        files.append((out / "model.safetensors").read_bytes())
    assert files[0] == files[1] == files[2]
    loaded, _, _ = load_checkpoint(tmp_path / "rm-1")
    assert type(loaded) is RewardEnsemble
    for member in loaded.members:                                   # still tied after loading
        assert member.trunk.lm_head.weight is member.trunk.transformer.wte.weight
    torch.manual_seed(0)
    for a, b in zip(RewardEnsemble(get_config("tiny"), n_members=3).state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
