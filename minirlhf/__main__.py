"""The command line: `python -m minirlhf {data,pretrain,sample,pipeline,ship,compare} --help`.

Every number is checked as it is parsed (the allowed range is in the message), and every check that costs nothing
(paths writable, folders empty or ours) runs before any training. Errors are one line, `error: ...`; the exit
status says what happened (EXIT_CODES, also in `--help` and docs/troubleshooting.md).
"""

from __future__ import annotations

import _thread
import argparse
import math
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

EXIT_CODES = """exit status:
  0    done
  1    failed while running: a NaN or inf in training, a file-system error (disk full, permission denied),
       or the run folder in use by another run; the message names the stage, file or path
  2    the command line or its input is wrong: a number out of range, an unknown preset, a missing or damaged
       input, an --out holding someone else's files; nothing was changed
  130  interrupted (Ctrl-C); a pipeline keeps its finished stages: continue it with --resume"""
MAX_SEED = 2**32 - 1   # pipeline.MAX_SEED (not imported: building the parser must not import torch)


# ------------------------------------------------------------------------------------------------------------
# Arguments, checked as they are parsed (argparse prints the message and exits with status 2)


def _integer(low: int, high: int | None = None):
    """An argument type: an integer in low..high (high None: no upper bound)."""
    allowed = f"from {low} to {high}" if high is not None else f"≥ {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give one {allowed}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; give an integer {allowed}")
        return value
    return parse


def _number(low: float, above: bool = False):
    """An argument type: a finite number ≥ low (> low when `above`)."""
    allowed = f"{'>' if above else '≥'} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one {allowed}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give a finite number {allowed}")
        return value
    return parse


def _text(text: str) -> str:
    """An argument type: text that is valid UTF-8 (bytes that are not arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("the text is not valid UTF-8: check the terminal's encoding") from None
    if not text.strip():
        raise argparse.ArgumentTypeError("the message is empty: write one")
    return text


SEED = _integer(0, MAX_SEED)


def _list(item):
    """An argument type: comma-separated values, each parsed (and range-checked) by `item`."""
    def parse(text: str) -> tuple:
        return tuple(item(part.strip()) for part in text.split(","))
    return parse


def _choices(allowed: tuple):
    """An argument type: comma-separated names, each one of `allowed`."""
    def parse(text: str) -> tuple:
        names = tuple(part.strip() for part in text.split(","))
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(allowed)}")
        return names
    return parse


# ------------------------------------------------------------------------------------------------------------
# The commands


def _check_world_folder(folder: Path) -> None:
    """`data --out`: a new or empty folder, or one holding a world's files (entities.json says so)."""
    import json

    from minirlhf.runfolder import RunFolderError, check_writable, visible

    check_writable(folder)
    if not visible(folder):
        return
    try:
        ours = set(json.loads((folder / "entities.json").read_text(encoding="utf-8"))) >= {"config", "entities"}
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise RunFolderError(f"{folder} is not empty and holds no toy world (no entities.json of one): refusing to "
                             "write the world's files over what is there; choose a new or empty --out")


def _cmd_data(args) -> None:
    from minirlhf.world import World, WorldConfig, write_world_files

    _check_world_folder(Path(args.out))
    world = World(WorldConfig(seed=args.seed))
    write_world_files(world, args.out)
    print(f"wrote the toy world (seed {args.seed}) to {args.out}/")


def _cmd_pretrain(args) -> None:
    from dataclasses import replace

    from minirlhf import distributed
    from minirlhf.pipeline import pipeline_config, pretrain_model
    from minirlhf.runfolder import check_checkpoint_out

    cfg = pipeline_config(args.preset)
    cfg.pretrain = replace(cfg.pretrain, steps=cfg.pretrain.steps if args.steps is None else args.steps,
                           max_seconds=args.max_seconds)
    check_checkpoint_out(Path(args.out))   # before training, not after it
    with distributed.process_group(args.device):   # under torchrun: train with the other processes
        main = distributed.is_main()               # it alone measures in-context learning and writes
        pretrain_model(Path(args.out), cfg, seed=args.seed, icl=not args.no_icl and main)
        if main:
            print(f"pre-trained checkpoint written to {args.out}/")


def _cmd_sample(args) -> None:
    import torch

    from minirlhf.chat import chat_turn
    from minirlhf.checkpoint import load_checkpoint, read_config, read_metadata

    architecture = read_config(args.checkpoint)["architecture"]
    if architecture != "GPT":
        raise ValueError(f"{args.checkpoint} holds a {architecture} (stage "
                         f"{read_metadata(args.checkpoint).get('stage')!r}): a reward model scores answers, it does "
                         "not write them; sample from a policy: pretrained, sft, ppo or ppo_ptx")
    model, tokenizer, meta = load_checkpoint(args.checkpoint)
    generator = torch.Generator().manual_seed(args.seed)
    prompts = args.prompt or ["what colour does kika like ?", "name two foods .", "tell me about dema ."]
    print(f"# {args.checkpoint} (stage: {meta.get('stage')}), temperature {args.temperature}")
    for text in prompts:
        for _ in range(args.n):
            reply, _ = chat_turn(model, tokenizer, [{"role": "user", "content": text}], args.max_new_tokens,
                                 args.temperature, args.top_k, generator)
            print(f"user: {text}\nassistant: {reply}\n")


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]: distinct non-negative integers (at most MAX_SEED), comma-separated."""
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() and int(item) <= MAX_SEED for item in items):
        raise ValueError(f"--seeds {text!r}: give distinct non-negative integers (at most {MAX_SEED}) separated "
                         "by commas, e.g. 0,1,2")
    seeds = [int(item) for item in items]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed; each seed runs once")
    return seeds


def _cmd_pipeline(args) -> None:
    from minirlhf import distributed
    from minirlhf.pipeline import pipeline_config, run_pipeline, run_seeds

    cfg = pipeline_config(args.preset)   # an unknown preset fails here, before anything runs
    if args.reward_members is not None:
        cfg = replace(cfg, reward_members=args.reward_members)
    if args.reward_readout is not None:
        cfg = replace(cfg, reward_readout=args.reward_readout)
    if args.reward_surprise is not None:
        cfg = replace(cfg, reward_surprise=args.reward_surprise)
    if args.reward_flag_coef is not None:
        cfg = replace(cfg, reward=replace(cfg.reward, flag_coef=args.reward_flag_coef))
    if args.cut_copies is not None:
        cfg = replace(cfg, comparisons=replace(cfg.comparisons, cut_copies=args.cut_copies))
    if args.seeds is not None and args.seed is not None:
        raise ValueError("give either --seed (one run in --out) or --seeds (one run per seed in --out/seed-S)")
    with distributed.process_group(args.device):   # under torchrun: train with the other processes
        if args.seeds is None:
            run_pipeline(Path(args.out), preset=cfg, seed=args.seed or 0, resume=args.resume,
                         pretrained=args.pretrained, force=args.force)
            return
        run_seeds(Path(args.out), preset=cfg, seeds=parse_seeds(args.seeds), resume=args.resume,
                  pretrained=args.pretrained, force=args.force)
        if distributed.is_main():
            print(f"seeds {args.seeds}: {args.out}/metrics.json and {args.out}/report.md")


def _cmd_ship(args) -> None:
    from minirlhf.course.shipped import ship_run

    written = ship_run(Path(args.run), Path(args.data), preset="course")
    print(f"shipped {len(written)} checkpoints and files from {args.run} to {args.data}/")


def _cmd_compare(args) -> None:
    from minirlhf import compare

    compare.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minirlhf", epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="minirlhf: from GPT to ChatGPT-style alignment on a toy world.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="regenerate the toy world's files (corpus, prompts, demonstrations)")
    p.add_argument("--seed", type=SEED, default=0, help="world seed (default 0: the shipped world)")
    p.add_argument("--out", default="data/world", help="folder to write: new, empty or a world's (default data/world)")
    p.set_defaults(func=_cmd_data, interrupted="the world's files may be half written: run the command again")

    p = sub.add_parser("pretrain", help="pre-train a GPT on the toy world's corpus (the L1 objective)")
    p.add_argument("--preset", default="course", help="pipeline preset whose model and pre-training budget to use: "
                   "smoke, course or gpu (default course)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--steps", type=_integer(1), default=None, help="optimiser steps, ≥ 1 (default: the preset's)")
    p.add_argument("--max-seconds", type=_number(0, above=True), default=None,
                   help="stop after this many seconds of training (> 0)")
    p.add_argument("--no-icl", action="store_true", help="skip measuring the in-context-learning curve")
    p.add_argument("--out", default="runs/pretrained", help="checkpoint folder to write (default runs/pretrained)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the fastest available); under "
                   "torchrun each process takes GPU LOCAL_RANK")
    p.set_defaults(func=_cmd_pretrain, interrupted="nothing was saved")

    p = sub.add_parser("sample", help="chat with a checkpoint")
    p.add_argument("checkpoint", help="checkpoint folder, e.g. data/checkpoints/pretrained")
    p.add_argument("--prompt", action="append", type=_text, help="a user message (repeatable); default: three examples")
    p.add_argument("--n", type=_integer(1), default=1, help="samples per prompt, ≥ 1 (default 1)")
    p.add_argument("--temperature", type=_number(0), default=0.7,
                   help="sampling temperature, ≥ 0; 0 = greedy (default 0.7)")
    p.add_argument("--top-k", type=_integer(1), default=None, help="keep only the k most likely tokens (default: all)")
    p.add_argument("--max-new-tokens", type=_integer(1), default=40, help="answer length limit in tokens (default 40)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_cmd_sample, interrupted="stopped")

    p = sub.add_parser("pipeline", help="run every stage: pre-train, SFT, two rounds of comparisons and reward models, "
                                         "PPO, PPO-ptx, evaluation, over-optimisation")
    p.add_argument("--preset", default="course", help="smoke (every stage, about a minute), course (default) or "
                   "gpu (one GPU, docs/scaling.md)")
    p.add_argument("--seed", type=SEED, default=None, help="random seed of a single run in --out (default 0)")
    p.add_argument("--seeds", default=None,
                   help="several seeds, e.g. 0,1,2: one run each in --out/seed-S, their aggregate in --out")
    p.add_argument("--out", default="runs/course", help="run folder: new, empty or a run's (default runs/course)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same preset and seed): skip "
                   "finished stages whose files are intact, redo the rest")
    p.add_argument("--force", action="store_true", help="run in an --out that holds other files (never replacing "
                   "them), start an existing run over, or resume across a config change")
    p.add_argument("--pretrained", default=None,
                   help="start from this pre-trained checkpoint instead of pre-training (e.g. data/checkpoints/pretrained)")
    p.add_argument("--reward-members", type=_integer(1), default=None,
                   help="the main reward model as the mean of this many RMs, ≥ 1 (ensemble.py; default: the preset's)")
    p.add_argument("--reward-readout", choices=("last", "sum"), default=None,
                   help="where both reward models read r_θ: the last token (InstructGPT) or the sum over tokens "
                        "(reward.py; default: the preset's, last)")
    p.add_argument("--reward-surprise", type=_number(0), default=None,
                   help="λ ≥ 0: both reward models lose λ per nat of the SFT model's surprise at the answer's least "
                        "expected token (reward.py; default: the preset's, 0)")
    p.add_argument("--reward-flag-coef", type=_number(0), default=None,
                   help="both reward models also learn the labelers' flags (hallucination), weighed by this ≥ 0 "
                        "(reward.py; default: the preset's, 0)")
    p.add_argument("--cut-copies", type=_integer(0, 3), default=None,
                   help="training comparisons also rank this many cut-off copies of ended answers per prompt, 0-3 "
                        "(comparisons.py; default: the preset's, 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the fastest available); under "
                   "torchrun each process takes GPU LOCAL_RANK")
    p.set_defaults(func=_cmd_pipeline, interrupted="finished stages are kept; rerun with --resume to continue")

    p = sub.add_parser("ship", help="copy a finished course run's checkpoints and results into data/ (for the notebooks)")
    p.add_argument("run", nargs="?", default="runs/course", help="run folder (default runs/course)")
    p.add_argument("--data", default="data", help="data folder of the repository (default data)")
    p.set_defaults(func=_cmd_ship, interrupted="data/ is as it was before")

    methods = ("ppo", "ppo_ptx", "dpo", "grpo", "rloo", "best_of_n")   # compare.METHODS (torch-free here)
    p = sub.add_parser("compare", help="beyond PPO: PPO, PPO-ptx, DPO, GRPO, RLOO and best-of-n from the same SFT "
                       "model, judged by the gold labeler (methods.json, methods.png)")
    p.add_argument("run", help="a finished run folder with comparisons_round*.jsonl (and sft/, rm/ unless "
                   "--checkpoints), e.g. runs/course or data/run")
    p.add_argument("--checkpoints", default=None, help="folder with the sft/ and rm/ checkpoints (default: the run "
                   "folder; for the shipped run: data/checkpoints)")
    p.add_argument("--out", default=None, help="where methods.json and methods.png go (default: the run folder)")
    p.add_argument("--methods", type=_choices(methods), default=",".join(methods),
                   help=f"comma-separated, from {','.join(methods)} (default: all)")
    p.add_argument("--betas", type=_list(_number(0, above=True)), default=None,
                   help="β values (> 0) for PPO, PPO-ptx, DPO, GRPO and RLOO (default 0.02,0.1,0.5)")
    p.add_argument("--ns", type=_list(_integer(1)), default=None, help="n values (≥ 1) for best-of-n (default 2,4,16)")
    p.add_argument("--samples", type=_integer(1), default=None, help="policy samples per run, ≥ 1 (default 1024)")
    p.add_argument("--reward", default="rm", choices=("rm", "gold"),
                   help="optimise the run's reward model (default) or the gold labeler itself (oracle runs)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of every run and of the evaluation (default 0)")
    p.add_argument("--quick", action="store_true", help="a smoke check: one knob value per method, 64 samples")
    p.set_defaults(func=_cmd_compare, interrupted="methods.json holds the runs that finished")
    return parser


# ------------------------------------------------------------------------------------------------------------
# Running a command: errors as one line, Ctrl-C that always stops


def _message(error: BaseException) -> str:
    """One line: an OSError as 'PATH: reason', anything else as its message."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _in_finalizer(frame) -> bool:
    """Whether Python is running a __del__ (or a weakref finalizer), where it ignores any exception raised."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "__call__" and code.co_filename.endswith("weakref.py")):
            return True
        frame = frame.f_back
    return False


class _CtrlC:
    """A first Ctrl-C always stops the command. Python drops a KeyboardInterrupt raised inside a __del__ (it prints
    "Exception ignored in ..." and carries on), and library code may swallow one (a bare `except:`), so from the
    first Ctrl-C until the command has stopped (`stopped`, set by main), it is raised again every second."""

    def __enter__(self):
        # signals reach the main thread only; a Ctrl-C ignored when the process started (nohup, &) stays ignored
        self.active = (threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
        self.stopped, self.pressed, self.lock = threading.Event(), False, threading.Lock()
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self._handle) or signal.default_int_handler
        return self

    def __exit__(self, *exc) -> None:
        with self.lock:   # no repeat after this (signal.signal runs a pending one through _handle first)
            self.stopped.set()
        if self.active:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.stopped.is_set():   # a repeat that arrives after the command has stopped
            return
        if not self.pressed:
            self.pressed = True
            threading.Thread(target=self._again, daemon=True).start()
        if not _in_finalizer(frame):   # (in one, Python would drop it: _again delivers it later)
            raise KeyboardInterrupt

    def _again(self) -> None:
        while not self.stopped.wait(1.0):
            with self.lock:
                if not self.stopped.is_set():
                    _thread.interrupt_main()   # the main thread runs _handle again


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from minirlhf.runfolder import RunFolderBusy

    with _CtrlC() as ctrl_c:
        try:
            args.func(args)
        except KeyboardInterrupt:
            ctrl_c.stopped.set()
            print(f"\ninterrupted: {getattr(args, 'interrupted', 'stopped')}", file=sys.stderr)
            return 130
        except (FileNotFoundError, ValueError) as error:   # the command line or its input is wrong
            print(f"error: {_message(error)}", file=sys.stderr)
            return 2
        except (OSError, FloatingPointError, RunFolderBusy) as error:   # it failed while running
            print(f"error: {_message(error)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
