"""The command line: `python -m minirlhf {data,pretrain,sample,pipeline} --help`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_data(args) -> None:
    from minirlhf.world import World, WorldConfig, write_world_files

    world = World(WorldConfig(seed=args.seed))
    write_world_files(world, args.out)
    print(f"wrote the toy world (seed {args.seed}) to {args.out}/")


def _cmd_pretrain(args) -> None:
    from dataclasses import replace

    from minirlhf.pipeline import pipeline_config, pretrain_model

    cfg = pipeline_config(args.preset)
    cfg.pretrain = replace(cfg.pretrain, steps=args.steps or cfg.pretrain.steps, max_seconds=args.max_seconds)
    pretrain_model(Path(args.out), cfg, seed=args.seed, icl=not args.no_icl)
    print(f"pre-trained checkpoint written to {args.out}/")


def _cmd_sample(args) -> None:
    import torch

    from minirlhf.chat import chat_turn
    from minirlhf.checkpoint import load_checkpoint

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
    """"0,1,2" -> [0, 1, 2]: distinct non-negative integers, comma-separated."""
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() for item in items):
        raise ValueError(f"--seeds {text!r}: give distinct non-negative integers separated by commas, e.g. 0,1,2")
    seeds = [int(item) for item in items]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed; each seed runs once")
    return seeds


def _cmd_pipeline(args) -> None:
    from minirlhf.pipeline import pipeline_config, run_pipeline, run_seeds

    pipeline_config(args.preset)   # an unknown preset fails here, before anything runs
    if args.seeds is None:
        run_pipeline(Path(args.out), preset=args.preset, seed=args.seed or 0, resume=args.resume,
                     pretrained=args.pretrained)
        return
    if args.seed is not None:
        raise ValueError("give either --seed (one run in --out) or --seeds (one run per seed in --out/seed-S)")
    run_seeds(Path(args.out), preset=args.preset, seeds=parse_seeds(args.seeds), resume=args.resume,
              pretrained=args.pretrained)
    print(f"seeds {args.seeds}: {args.out}/metrics.json and {args.out}/report.md")


def _cmd_ship(args) -> None:
    from minirlhf.course.shipped import ship_run

    written = ship_run(Path(args.run), Path(args.data))
    print(f"shipped {len(written)} checkpoints and files from {args.run} to {args.data}/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minirlhf",
                                     description="minirlhf: from GPT to ChatGPT-style alignment on a toy world.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="regenerate the toy world's files (corpus, prompts, demonstrations)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0: the shipped world)")
    p.add_argument("--out", default="data/world", help="folder to write (default data/world)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("pretrain", help="pre-train a GPT on the toy world's corpus (the L1 objective)")
    p.add_argument("--preset", default="course", help="pipeline preset whose model and pre-training budget to use: "
                   "smoke or course (default course)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds of training")
    p.add_argument("--no-icl", action="store_true", help="skip measuring the in-context-learning curve")
    p.add_argument("--out", default="runs/pretrained", help="checkpoint folder to write (default runs/pretrained)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("sample", help="chat with a checkpoint")
    p.add_argument("checkpoint", help="checkpoint folder, e.g. data/checkpoints/pretrained")
    p.add_argument("--prompt", action="append", help="a user message (repeatable); default: three examples")
    p.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7)")
    p.add_argument("--top-k", type=int, default=None, help="keep only the k most likely tokens (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="answer length limit in tokens (default 40)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("pipeline", help="run every stage: pre-train, SFT, two rounds of comparisons and reward models, "
                                         "PPO, PPO-ptx, evaluation, over-optimisation")
    p.add_argument("--preset", default="course", help="smoke (every stage, about a minute) or course (default)")
    p.add_argument("--seed", type=int, default=None, help="random seed of a single run in --out (default 0)")
    p.add_argument("--seeds", default=None,
                   help="several seeds, e.g. 0,1,2: one run each in --out/seed-S, their aggregate in --out")
    p.add_argument("--out", default="runs/course", help="run folder (default runs/course)")
    p.add_argument("--resume", action="store_true", help="skip stages whose checkpoints already exist in the run folder")
    p.add_argument("--pretrained", default=None,
                   help="start from this pre-trained checkpoint instead of pre-training (e.g. data/checkpoints/pretrained)")
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("ship", help="copy a finished course run's checkpoints and results into data/ (for the notebooks)")
    p.add_argument("run", nargs="?", default="runs/course", help="run folder (default runs/course)")
    p.add_argument("--data", default="data", help="data folder of the repository (default data)")
    p.set_defaults(func=_cmd_ship)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are intact; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
