"""PPO iteration time split (generation / scoring / update), rollout tokens/s, and the pipeline's wall time and
peak memory per stage.

    python benchmarks/bench_ppo.py [--iterations 6] [--threads 2] [--run data/run]

Uses the shipped course SFT policy and reward model (data/checkpoints), so it measures the real course setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path

import torch

from minirlhf.course.shipped import RUN, load_stage
from minirlhf.evaluate import rollout_gold
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.tokenizer import encode_chat_prompt
from minirlhf.world import default_world


def bench_ppo(iterations: int, batch_size: int) -> dict:
    sft, tokenizer, _ = load_stage("sft")
    rm, _, _ = load_stage("rm", tokenizer=tokenizer)
    world = default_world()
    prompts = world.prompts("train")
    cfg = PPOConfig(iterations=iterations, batch_size=batch_size)
    start = time.perf_counter()
    _, h = train_ppo(copy.deepcopy(sft).requires_grad_(True), [encode_chat_prompt(tokenizer, p) for p in prompts],
                     cfg, reference=sft, reward_model=rm, value_model=copy.deepcopy(rm).requires_grad_(True),
                     tokenizer=tokenizer, eval_fn=rollout_gold(world, prompts, tokenizer), progress=False)
    total = time.perf_counter() - start
    skip = 1 if iterations > 1 else 0                      # the first iteration warms up caches and allocators
    mean = lambda k: sum(h[k][skip:]) / len(h[k][skip:])   # noqa: E731
    tokens = batch_size * mean("response_length")
    return {"seconds_per_iteration": total / iterations, "generate": mean("time_generate"),
            "score": mean("time_score"), "update": mean("time_update"),
            "rollout_tokens_per_s": tokens / mean("time_generate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=6, help="PPO iterations to time (default 6)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per rollout (default 64, the course's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--run", default=str(RUN), help="run folder whose metrics.json gives stage times (default data/run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    r = bench_ppo(args.iterations, args.batch_size)
    split = r["generate"] + r["score"] + r["update"]
    print(f"PPO iteration (course preset, {args.batch_size} prompts, {args.threads} threads): "
          f"{r['seconds_per_iteration']:.2f} s")
    for part in ("generate", "score", "update"):
        print(f"  {part:<9} {r[part]:6.3f} s  ({r[part] / split:5.1%})")
    print(f"  rollout tokens/s: {r['rollout_tokens_per_s']:.0f}")
    print(f"  peak RSS of this benchmark: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    metrics_file = Path(args.run) / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        print(f"\npipeline run ({metrics_file}): wall seconds and peak RSS per stage")
        for stage, seconds in m.get("wall_seconds", {}).items():
            print(f"  {stage:<12} {seconds:7.1f} s   {m.get('peak_rss_mb', {}).get(stage, float('nan')):6.0f} MB")
        print(f"  {'total':<12} {sum(m.get('wall_seconds', {}).values()):7.1f} s")


if __name__ == "__main__":
    main()
