"""Checkpoints: save a model (and its tokenizer) as a folder, load it back, refuse anything that doesn't match.

Every stage of the pipeline (pre-train -> SFT -> reward model -> PPO, InstructGPT §3) starts from the previous
stage's checkpoint, so a checkpoint must be (1) safe to load: weights in safetensors, never pickle, which can
run arbitrary code; (2) self-describing: the folder says which class and which config built it; and
(3) never half-written: a save interrupted by an error or Ctrl-C leaves the previous checkpoint as it was.

A checkpoint folder:

    model.safetensors    weights (tied weights are stored once: _save_weights; safetensors' load_model)
    config.json          {"format": "minirlhf-checkpoint", "version": 1,
                          "architecture": "GPT" | "RewardModel" | "RewardEnsemble",
                          "gpt_config": {...asdict(model.config)...}, "extra": {...}}
    metadata.json        {"stage", "created" (UTC), "minirlhf_version", "tokenizer_fingerprint", + your keys
                          such as "seed" and "metrics"}
    tokenizer.json, ...  the tokenizer (tok.save_pretrained), when one is given

Contract for model classes: `model.config` is a dataclass (a `GPTConfig`); a class whose constructor needs
more than the config provides `checkpoint_extra() -> dict` (JSON values); `load_checkpoint` rebuilds the model
as `cls(GPTConfig(**gpt_config), **extra)`. For example, `RewardModel(GPTConfig(...), **extra)`.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file

import minirlhf
from minirlhf import distributed

FORMAT = "minirlhf-checkpoint"
VERSION = 1
WEIGHTS, CONFIG, METADATA = "model.safetensors", "config.json", "metadata.json"
RESERVED_METADATA = ("stage", "created", "minirlhf_version", "tokenizer_fingerprint")


# Classes load_checkpoint may build, by the name stored in config.json -> (module, class). Imported lazily,
# only when needed: checkpoint.py must not import every stage of the pipeline.
ARCHITECTURES = {"GPT": ("minirlhf.model", "GPT"), "RewardModel": ("minirlhf.reward", "RewardModel"),
                 "RewardEnsemble": ("minirlhf.ensemble", "RewardEnsemble")}


def _architecture(name: str, file: Path) -> type:
    if name not in ARCHITECTURES:
        raise ValueError(f"{file} names architecture {name!r}; load_checkpoint knows {sorted(ARCHITECTURES)}")
    module, cls = ARCHITECTURES[name]
    return getattr(importlib.import_module(module), cls)


# ----------------------------------------------------------------------------------------------------------
# Saving


def _to_json(obj: Any) -> Any:
    """json.dumps fallback: tensor/numpy scalars, dataclasses, paths; anything else is an error."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        return obj.item()  # torch.tensor(0.5) or np.float32(0.5) -> 0.5
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False, default=_to_json) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must hold only JSON values (numbers, strings, lists, dicts): {e}") from e


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically: into a temp file beside it, then os.replace (readers never see half a file).
    Under torchrun only the main process writes; the others wait until it has, then go on (and may read it)."""
    path = Path(path)
    if not distributed.is_main():
        distributed.barrier()
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, text)
    distributed.barrier()   # (nothing in a plain run) the others may read it now
    return path


def replace_text(path: Path, text: str) -> None:
    """The atomic write itself, in this process only: a temp file beside `path`, fsynced, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _write_text(tmp, text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so a crash after the rename cannot leave empty files behind."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows, for folders) cannot fsync a folder: best effort
        pass
    finally:
        os.close(fd)


def _model_config(model: torch.nn.Module) -> dict:
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(
            f"{type(model).__name__} has no dataclass .config; save_checkpoint saves models built from a "
            "GPTConfig (minirlhf.model.GPT, minirlhf.reward.RewardModel)"
        )
    return dataclasses.asdict(config)


def _build_metadata(stage: str, tokenizer, metadata: dict | None) -> dict:
    if not isinstance(stage, str) or not stage:
        raise ValueError(
            f"stage must be a non-empty string such as 'pretrained', 'sft', 'rm', 'ppo'; got {stage!r}"
        )
    metadata = dict(metadata or {})
    clashes = [key for key in RESERVED_METADATA if key in metadata]
    if clashes:
        raise ValueError(
            f"metadata keys {clashes} are written by save_checkpoint itself; remove them (stage: use stage=)"
        )
    from minirlhf.tokenizer import tokenizer_fingerprint

    return {
        "stage": stage,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "minirlhf_version": minirlhf.__version__,
        "tokenizer_fingerprint": None if tokenizer is None else tokenizer_fingerprint(tokenizer),
        **metadata,
    }


def _save_weights(model: torch.nn.Module, file: Path) -> None:
    """model.safetensors: every tensor of the state dict once. Tied weights (wte and lm_head) are one tensor under
    two names; the file keeps the first name in sorted order, as safetensors' save_model does, and load_model puts
    it back under both. Unlike save_model it lists no dropped names in the header: save_model writes them as a map
    whose order changes from one process to the next once a model ties more than one pair (an ensemble of GPT
    trunks), and then the same weights would not give the same bytes."""
    state = model.state_dict()
    views: dict[tuple, list[str]] = {}
    for name, tensor in state.items():   # the same storage, offset, shape and strides: the same tensor
        key = ((tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                tuple(tensor.stride())) if tensor.numel() else (name,))
        views.setdefault(key, []).append(name)
    kept = sorted(sorted(names)[0] for names in views.values())
    save_file({name: state[name].contiguous() for name in kept}, str(file), metadata={"format": "pt"})


def _write_checkpoint(folder: Path, model: torch.nn.Module, tokenizer, config: dict, meta_text: str) -> None:
    """Write every file of a checkpoint into `folder` (a fresh temp folder) and fsync them."""
    _save_weights(model, folder / WEIGHTS)   # safetensors, no pickle
    _write_text(folder / CONFIG, _dumps(config, "config.json"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    _write_text(folder / METADATA, meta_text)  # last: a folder with metadata.json was written completely
    for file in folder.iterdir():
        _fsync(file)
    _fsync(folder)


def _is_checkpoint(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    tokenizer=None,
    stage: str = "pretrained",
    metadata: dict | None = None,
) -> Path:
    """Save `model` (and `tokenizer`) as a checkpoint folder at `path`, atomically; returns the path.

    Everything is written into a hidden temp folder next to `path`, then swapped in with os.replace. If
    anything fails (or you press Ctrl-C) the temp folder is deleted and an existing checkpoint is untouched.
    Under torchrun only the main process writes; the others wait until it has, then go on (and may load it).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{str(target)!r} is a file; a checkpoint is a folder: choose another path")
    if target.is_dir() and any(target.iterdir()) and not _is_checkpoint(target):
        raise ValueError(
            f"{str(target)!r} exists and is not a minirlhf checkpoint; refusing to replace it: "
            "choose another path or delete the folder yourself"
        )
    config = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": type(model).__name__,
        "gpt_config": _model_config(model),
        "extra": dict(model.checkpoint_extra()) if hasattr(model, "checkpoint_extra") else {},
    }
    meta_text = _dumps(_build_metadata(stage, tokenizer, metadata), "metadata")  # fail before touching disk
    if not distributed.is_main():
        distributed.barrier()
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    temp = target.parent / f".{target.name}.tmp-{tag}"
    backup = target.parent / f".{target.name}.old-{tag}"
    try:
        temp.mkdir()
        _write_checkpoint(temp, model, tokenizer, config, meta_text)
        if target.exists():
            os.replace(target, backup)  # keep the old checkpoint until the new one is in place
        os.replace(temp, target)
        _fsync(target.parent)
    except BaseException:  # includes KeyboardInterrupt: clean up, restore, re-raise
        shutil.rmtree(temp, ignore_errors=True)
        if backup.exists() and not target.exists():
            os.replace(backup, target)  # the new one never arrived: put the old one back
        shutil.rmtree(backup, ignore_errors=True)  # (if the new one did arrive, it is complete)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    distributed.barrier()   # (nothing in a plain run) the others may load it now
    return target


# ----------------------------------------------------------------------------------------------------------
# Loading


def _missing(folder: Path, name: str) -> FileNotFoundError:
    return FileNotFoundError(f"no {name} in {folder}: is this a minirlhf checkpoint folder?")


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e}); the checkpoint is damaged: save it again") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{file} should hold a JSON object, found {type(data).__name__}; save the checkpoint again"
        )
    return data


def _check_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.is_dir() else []
        hint = f" (an interrupted save left {leftovers[0]}: rename it to {folder})" if leftovers else ""
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist{hint}")
    return folder


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata.json of a checkpoint: stage, created, minirlhf_version, tokenizer_fingerprint, seed, metrics..."""
    folder = _check_folder(path)
    if not (folder / METADATA).is_file():
        raise _missing(folder, METADATA)
    return _read_json(folder / METADATA)


def read_config(path: str | os.PathLike) -> dict:
    """The config.json of a checkpoint, checked: format, version, architecture, gpt_config, extra."""
    folder = _check_folder(path)
    file = folder / CONFIG
    if not file.is_file():
        raise _missing(folder, CONFIG)
    config = _read_json(file)
    if config.get("format") != FORMAT:
        raise ValueError(
            f"{file} has format {config.get('format')!r}, expected {FORMAT!r}: not a minirlhf checkpoint"
        )
    if config.get("version") != VERSION:
        raise ValueError(
            f"{file} is checkpoint format version {config.get('version')!r}; this minirlhf reads version {VERSION}"
        )
    if not isinstance(config.get("architecture"), str) or not isinstance(config.get("gpt_config"), dict):
        raise ValueError(
            f"{file} lacks 'architecture' (a class name) or 'gpt_config' (a dict); save it again"
        )
    if not isinstance(config.setdefault("extra", {}), dict):
        raise ValueError(f"{file}: 'extra' must be a dict of constructor arguments")
    return config


def _config_differences(stored: dict, expected) -> list[str]:
    expected = dataclasses.asdict(expected) if dataclasses.is_dataclass(expected) else dict(expected)
    return [
        f"{key}: checkpoint {stored.get(key, '<absent>')!r}, expected {expected.get(key, '<absent>')!r}"
        for key in sorted(set(stored) | set(expected))
        if stored.get(key, "<absent>") != expected.get(key, "<absent>")
    ]


def _check_tokenizer(tokenizer, metadata: dict, vocab_size: int, folder: Path) -> None:
    from minirlhf.tokenizer import tokenizer_fingerprint

    stored = metadata.get("tokenizer_fingerprint")
    given = tokenizer_fingerprint(tokenizer)
    if stored is not None and stored != given:
        raise ValueError(
            f"the tokenizer does not match the one {folder} was trained with (fingerprint {given}, checkpoint "
            f"{stored}): the model would read the wrong token ids; load with tokenizer=None to use the saved one"
        )
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model in {folder} has vocab_size={vocab_size}"
        )


def _build_model(config: dict, file: Path) -> torch.nn.Module:
    from minirlhf.model import GPTConfig

    cls = _architecture(config["architecture"], file)
    known = {field.name for field in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(config["gpt_config"]) - known)
    if unknown:
        raise ValueError(f"{file}: gpt_config has fields GPTConfig does not know: {unknown}")
    try:
        return cls(GPTConfig(**config["gpt_config"]), **config["extra"])
    except (TypeError, ValueError) as e:  # e.g. n_embd not divisible by n_head, or an unknown extra argument
        raise ValueError(f"{file}: cannot build {config['architecture']} from this config: {e}") from e


def _load_weights(model: torch.nn.Module, file: Path) -> None:
    try:
        missing, unexpected = load_model(model, str(file), strict=False)  # safetensors.load_file inside
    except Exception as e:  # a tensor with the wrong shape (RuntimeError), a truncated file (SafetensorError)
        raise ValueError(f"the weights in {file} do not fit {type(model).__name__}: {e}") from e
    if missing or unexpected:
        raise ValueError(
            f"the weights in {file} do not match {type(model).__name__}: "
            f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
        )


def load_checkpoint(
    path: str | os.PathLike,
    expect_config=None,
    tokenizer=None,
    device: str | torch.device | None = None,
):
    """Load a checkpoint folder: returns (model in eval mode on `device` (default CPU), tokenizer, metadata).

    expect_config (a GPTConfig or dict): refuse a checkpoint whose config differs, listing each field.
    tokenizer: refuse it if it is not the tokenizer the checkpoint was saved with; None loads the saved
    tokenizer (or returns None when the checkpoint has none).
    """
    folder = _check_folder(path)
    for name in (CONFIG, WEIGHTS, METADATA):
        if not (folder / name).is_file():
            raise _missing(folder, name)
    config, metadata = read_config(folder), read_metadata(folder)
    gpt_config = config["gpt_config"]
    if expect_config is not None:
        differences = _config_differences(gpt_config, expect_config)
        if differences:
            raise ValueError(f"the checkpoint in {folder} has a different config: " + "; ".join(differences))

    if tokenizer is None and (folder / "tokenizer.json").is_file():
        from minirlhf.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(folder)
    if tokenizer is not None:
        _check_tokenizer(tokenizer, metadata, gpt_config.get("vocab_size", len(tokenizer)), folder)

    model = _build_model(config, folder / CONFIG)
    _load_weights(model, folder / WEIGHTS)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    return model, tokenizer, metadata
