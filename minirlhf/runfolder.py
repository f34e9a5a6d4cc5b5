"""A run folder is the pipeline's own: a manifest says so, a lock keeps a second run out, checksums catch damage.

`python -m minirlhf pipeline --out DIR` writes every stage's output into DIR, beside two small files:

    run.json    the manifest: what made the run (kind, preset, seed, the whole config, minirlhf's version) and, for
                every finished stage, the SHA-256 of each file it wrote, its metrics, wall time and peak memory;
                "finished" once the report is written
    run.lock    locked by the operating system while a pipeline writes into DIR: a second one is refused, and the
                lock goes away by itself when the process ends, however it ends (even SIGKILL)

`RunFolder.open` decides whether DIR may be used:

  - missing or empty: a new run folder;
  - holding run.json: ours. --resume continues it when preset and seed match (never otherwise: a run is not
    relabelled) and the config too (--force resumes across a config change, and run.json notes the changes);
    without --resume it is refused (--force starts it over);
  - a run made before run.json existed (its metrics.json names the same preset and seed): adopted by --resume;
  - anything else (someone's files): refused; --force runs beside them, never replacing one of them.

A stage whose files no longer match their checksums is not trusted: the pipeline redoes it and every stage after it
(they were built on it). run.json is written atomically, so a crash never leaves half of it, and the temporary
files that interrupted writes leave behind are removed (or put back) when the folder is opened again. Under torchrun,
process 0 alone locks the folder and writes run.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

import minirlhf
from minirlhf.checkpoint import replace_text

MANIFEST, LOCK, METRICS = "run.json", "run.lock", "metrics.json"
FORMAT, VERSION = "minirlhf-run", 1
# What an interrupted atomic write leaves: .NAME.tmp-PID-HEX / .NAME.old-PID-HEX (checkpoint.py), .STEM.XXXXXXXX.png
# (course/plots.py's figures)
LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-\d+-[0-9a-f]+|\.[^.]+\.[a-z0-9_]{8}\.png")


class RunFolderError(ValueError):
    """This folder may not be used as a run folder (someone else's files, another run, a damaged manifest)."""


class RunFolderBusy(RuntimeError):
    """Another process is writing into this run folder."""


# ------------------------------------------------------------------------------------------------------------
# Files: checksums, and what a stage wrote


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_under(path: Path) -> list[Path]:
    """A file itself, or every file in a folder (a checkpoint), sorted."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]


def visible(folder: Path) -> list[Path]:
    """The entries of a folder that are not hidden (hidden ones are temporary files of atomic writes)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def snapshot(folder: Path, ignore: tuple = ()) -> dict[str, tuple]:
    """Each visible entry's (inode, modification time, size). An atomic write always makes a new inode, so
    `written_since` sees every file a stage wrote or replaced."""
    out = {}
    for path in visible(folder):
        if path.name not in (MANIFEST, LOCK, *ignore):
            stat = path.stat()
            out[path.name] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return out


def written_since(folder: Path, before: dict, ignore: tuple = ()) -> list[Path]:
    return [folder / name for name, identity in snapshot(folder, ignore).items() if before.get(name) != identity]


# ------------------------------------------------------------------------------------------------------------
# Cheap checks, before any training


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and write (then remove) a file in it: an OSError names the path and the reason."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder: choose another path")
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    probe.touch(exist_ok=False)
    probe.unlink()


def check_checkpoint_out(path: Path) -> None:
    """Before training: a checkpoint can be saved at `path` (the same rules as save_checkpoint, checked first)."""
    from minirlhf.checkpoint import read_config

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file; a checkpoint is a folder: choose another --out")
    if path.is_dir() and any(path.iterdir()):
        try:
            read_config(path)
        except (ValueError, FileNotFoundError):
            raise RunFolderError(f"{path} exists and is not a minirlhf checkpoint; refusing to replace it: choose "
                                 "another --out, or move that folder away yourself") from None
    check_writable(path.parent)


# ------------------------------------------------------------------------------------------------------------
# The lock


def _lock(folder: Path) -> int:
    """Lock folder/run.lock for this process (released by the OS when it ends); RunFolderBusy if another holds it."""
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _try_lock(fd)
    except OSError:
        holder = path.read_text(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderBusy(f"{folder} is in use by another run (pid {holder}); wait for it to finish or "
                            "choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _try_lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:   # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ------------------------------------------------------------------------------------------------------------
# The manifest


def read_manifest(folder: Path) -> dict | None:
    """folder/run.json, or None when there is none; RunFolderError when it is damaged."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise RunFolderError(f"{path} is damaged ({error}): move it away and resume (each stage is then checked "
                             "by loading it)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("stages"),
                                                                                           dict):
        raise RunFolderError(f"{path} is not a minirlhf run manifest (format {FORMAT!r})")
    return manifest


def _read_metrics(folder: Path) -> tuple[dict | None, str | None]:
    """(metrics.json's content, None), or (None, why it cannot be read)."""
    try:
        metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        return None, str(error)
    return (metrics, None) if isinstance(metrics, dict) else (None, "not a JSON object")


def _legacy_metrics(folder: Path, kind: str, identity: dict) -> dict | None:
    """metrics.json of a run made before run.json existed, if it is one of this kind and identity; else None."""
    metrics, _ = _read_metrics(folder)
    if metrics is None or "preset" not in metrics or ("seeds" in metrics) != (kind == "seeds"):
        return None
    return metrics if all(metrics.get(key) == value for key, value in identity.items()) else None


def _legacy_hint(folder: Path, kind: str) -> str:
    """What to add to the refusal of a folder without run.json that may be an older run."""
    if not (folder / METRICS).is_file():
        return ""
    metrics, error = _read_metrics(folder)
    if error is not None:
        return f" ({folder / METRICS} cannot be read: {error}.)"
    if _legacy_metrics(folder, kind, {}) is not None:
        return (f" It looks like a run made by an older minirlhf (preset {metrics.get('preset')!r}): --resume with "
                "its own preset and seed continues it.")
    return ""


def _differences(old, new, where: str = "") -> list[str]:
    """Where two JSON values differ, as 'pretrain.steps: 120 in run.json, 100 now'."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    return [] if old == new else [f"{where or 'config'}: {json.dumps(old)} in {MANIFEST}, {json.dumps(new)} now"]


def _describe(manifest: dict) -> str:
    identity = ", ".join(f"{key} {manifest[key]!r}" for key in ("preset", "seed") if key in manifest)
    return f"a {manifest.get('kind', 'run')} ({identity}; {len(manifest['stages'])} stages finished)"


class RunFolder:
    """An open run folder: its manifest, and (in the main process) the lock held while it is open."""

    def __init__(self, folder: Path, manifest: dict, lock: int | None, legacy: dict | None, writes: bool = True):
        self.folder, self.manifest, self._lock, self.legacy, self.writes = folder, manifest, lock, legacy, writes

    @classmethod
    def open(cls, folder, *, kind: str, identity: dict, config: dict, resume: bool = False, force: bool = False,
             reserved: tuple = ()) -> RunFolder:
        """Check that `folder` may hold this run (module docstring), lock it, and record the run in run.json.

        identity: what a resumed run must share ({"preset", "seed"}); config: the whole configuration (JSON values);
        reserved: names the run writes, which --force never lets it write over someone else's files.
        Under torchrun, process 0 alone opens the folder (and writes run.json); the others get its manifest.
        """
        from minirlhf import distributed

        how = dict(kind=kind, identity=identity, config=config, resume=resume, force=force, reserved=reserved)
        if not distributed.is_distributed():
            return cls._open(Path(folder), **how)
        if distributed.is_main():
            try:
                run = cls._open(Path(folder), **how)
            except Exception as error:
                distributed.broadcast_object(("error", str(error)))
                raise
            distributed.broadcast_object(("ok", run.manifest, run.legacy))
            return run
        outcome = distributed.broadcast_object(None)
        if outcome[0] == "error":
            raise RunFolderError(f"process 0 could not open {folder}: {outcome[1]}")
        return cls(Path(folder), outcome[1], None, outcome[2], writes=False)

    @classmethod
    def _open(cls, folder: Path, *, kind, identity, config, resume, force, reserved) -> RunFolder:
        if folder.exists() and not folder.is_dir():
            raise RunFolderError(f"{folder} is a file, not a folder: choose another --out")
        legacy, foreign = cls._check_foreign(folder, kind, identity, resume, force, reserved)
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)   # the first write: an unwritable folder fails here, before any training
        try:
            manifest = read_manifest(folder)
            if manifest is None:
                manifest = _new_manifest(kind, identity, config, foreign)
            else:
                manifest = _reopen(folder, manifest, kind, identity, config, resume, force)
            _remove_leftovers(folder, keep=set(manifest["foreign"]))
            run = cls(folder, manifest, lock, legacy)
            run.save()
            return run
        except BaseException:
            os.close(lock)
            raise

    @staticmethod
    def _check_foreign(folder: Path, kind: str, identity: dict, resume: bool, force: bool, reserved: tuple):
        """(legacy metrics, foreign entries) of a folder without run.json; RunFolderError when it may not be used."""
        names = [p.name for p in visible(folder)]
        if (folder / MANIFEST).exists() or set(names) <= {LOCK}:
            return None, []
        if kind == "seeds" and all(re.fullmatch(r"seed-\d+", n) and (folder / n).is_dir() for n in names):
            return None, []   # seed-S run folders (each checks its own) and nothing else
        legacy = _legacy_metrics(folder, kind, identity) if resume else None
        if legacy is not None:
            return legacy, []
        if not force:
            raise RunFolderError(f"{folder} is not empty and is not a run folder (it has no {MANIFEST}): refusing to "
                                 "write there, so that nothing in it is overwritten. Choose a new or empty --out, "
                                 f"or add --force to run beside its files (never replacing them).{_legacy_hint(folder, kind)}")
        clashes = [n for n in names if n in reserved or n in (MANIFEST, LOCK) or n.endswith(".png")]
        if clashes:
            raise RunFolderError(f"{folder} holds {clashes}, which are not this pipeline's, and a run writes files "
                                 "of those names (figures too: *.png); --force never replaces someone else's "
                                 "files: move them away, or choose another --out")
        return None, names

    def save(self) -> None:
        """Write run.json atomically (a temporary file, then a rename): a crash never leaves half of it."""
        if not self.writes:   # a torchrun process other than 0
            return
        replace_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1, default=float) + "\n")

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)   # the OS drops the lock with the descriptor
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- stages

    @property
    def stages(self) -> dict:
        """{stage: {"files": {path: sha256}, "metrics": ..., ...}} of the finished stages, in the order they ran."""
        return self.manifest["stages"]

    def damage(self, stage: str) -> str | None:
        """Why a finished stage's files cannot be trusted (one missing, or not the bytes written), else None."""
        return stage_damage(self.folder, self.stages[stage])

    def finish(self, stage: str, written: list[Path], **record) -> dict:
        """Record a finished stage: the checksum of every file it wrote, and `record` (its metrics, timings)."""
        files = {}
        for path in written:
            for file in files_under(path):
                key = file.relative_to(self.folder) if file.is_relative_to(self.folder) else file.resolve()
                files[key.as_posix()] = sha256_of(file)
        self.stages[stage] = {"files": files, **record}
        self.save()
        return self.stages[stage]

    def forget(self, stages) -> None:
        """Drop stages about to be redone (and the ones after them): run.json never lists a stale stage."""
        dropped = [s for s in stages if self.stages.pop(s, None) is not None]
        if dropped or self.manifest["finished"]:
            self.manifest["finished"] = False
            self.save()

    def mark_finished(self) -> None:
        """Every stage and the report are written: `ship` may publish this run."""
        self.manifest["finished"] = True
        self.save()


def stage_damage(folder: Path, entry: dict) -> str | None:
    """Why the files of a stage recorded in run.json (`entry`) cannot be trusted, else None."""
    for key, digest in entry["files"].items():
        path = Path(key) if Path(key).is_absolute() else Path(folder) / key
        if not path.is_file():
            return f"{path} is missing"
        if sha256_of(path) != digest:
            return f"{path} is not the file this stage wrote (its SHA-256 differs: damaged or edited)"
    return None


def _new_manifest(kind: str, identity: dict, config: dict, foreign: list) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": kind, **identity, "minirlhf_version": minirlhf.__version__,
            "config": config, "foreign": foreign, "stages": {}, "finished": False}


def _reopen(folder: Path, manifest: dict, kind: str, identity: dict, config: dict, resume: bool, force: bool) -> dict:
    """The manifest of a run folder opened again: resumed (same preset and seed), or started over (--force)."""
    if not resume:
        if not force:
            raise RunFolderError(f"{folder} already holds {_describe(manifest)}. Add --resume to continue it (its "
                                 "finished stages are kept), --force to start it over, or choose another --out")
        return _new_manifest(kind, identity, config, manifest.get("foreign", []))
    wrong = [f"{key} {manifest.get(key)!r}" for key in ("kind", *identity)
             if manifest.get(key) != {"kind": kind, **identity}[key]]
    if wrong:
        now = ", ".join(f"{key} {value!r}" for key, value in {"kind": kind, **identity}.items())
        raise RunFolderError(f"{folder} holds a run of {', '.join(wrong)}; this one is {now}. --resume continues a "
                             "run only with its own preset and seed: choose another --out")
    changes = _differences(manifest["config"], config)
    if manifest.get("minirlhf_version") != minirlhf.__version__:
        changes.append(f"minirlhf_version: {manifest.get('minirlhf_version')} in {MANIFEST}, "
                       f"{minirlhf.__version__} now")
    if changes and not force:
        listed = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise RunFolderError(f"{folder} was run with another configuration ({listed}); resuming would mix the "
                             "two. Choose another --out, or add --force to resume anyway (run.json notes it)")
    if changes:
        manifest.update(config=config, minirlhf_version=minirlhf.__version__)
        manifest.setdefault("forced_changes", []).extend(changes)
    return manifest


def _remove_leftovers(folder: Path, keep: set) -> None:
    """Temporary files of writes interrupted in an earlier run: removed; a checkpoint moved aside for a swap
    (.NAME.old-…) whose replacement never arrived: put back."""
    for entry in folder.iterdir():
        match = LEFTOVER.fullmatch(entry.name)
        if match is None or entry.name in keep:
            continue
        if match["kind"] == "old" and not (folder / match["name"]).exists():
            os.replace(entry, folder / match["name"])
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
