"""Speed of minirlhf's GPT beside transformers' GPT2LMHeadModel, same weights, same inputs, 2 CPU threads.

    python benchmarks/bench_model.py            # about a minute

(1) a training step (forward + backward + AdamW), (2) batched generation with a KV cache, (3) our generation
with vs without the cache, (4) pre-training throughput of the course preset and the peak memory of the process.
Each figure is the median of several timed repeats after a warm-up. The two sides of a comparison run
alternately (A, B, A, B, ...) and the ratio is the median of the per-pair ratios, so a machine busy with other
work slows both sides alike (the absolute seconds still depend on it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minirlhf.hf import to_hf  # noqa: E402
from minirlhf.model import GPT, get_config  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(baseline, ours, repeats: int, warmup: int = 1):
    """Median seconds of each, alternating, and the median of the per-pair ratios baseline / ours."""
    for _ in range(warmup):
        baseline(), ours()
    pairs = [(timed(baseline), timed(ours)) for _ in range(repeats)]
    a, b = zip(*pairs)
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in pairs)


def train_step_fn(model, x, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    y = torch.roll(x, -1, 1)

    def step():
        loss = model(input_ids=x, labels=x).loss if hf else model(x, y)[1]  # HF shifts labels itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def benchmark_args(doc: str, repeats: int) -> argparse.Namespace:
    """--repeats and --threads from the command line; sets torch's thread count and seed 0."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def main():
    args = benchmark_args(__doc__, repeats=5)
    transformers.logging.set_verbosity_error()
    config = get_config("course")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"course preset {config} ({GPT(config).num_parameters() / 1e6:.2f}M parameters)\n")

    rows = []  # (what, HF or baseline seconds, ours seconds, ratio, goal)
    # (1) training step, batch 32 x 128
    B, T = 32, config.block_size
    x = torch.randint(0, config.vocab_size, (B, T))
    ours = GPT(config).train()
    hf = to_hf(ours).train()  # same weights; its own copy (different optimiser state)
    t_hf, t_ours, ratio = paired(train_step_fn(hf, x, hf=True), train_step_fn(ours, x, hf=False), args.repeats)
    rows.append((f"train step fwd+bwd+AdamW, {B}x{T} (s)", t_hf, t_ours, ratio, ">= 1.1"))
    train_tokens_per_s = B * T / t_ours

    # (2) generation, 32 prompts of 8..39 tokens, 64 new tokens, greedy, KV cache
    ours.eval()
    hf.eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(4, config.vocab_size, (8 + i,), generator=gen).tolist() for i in range(32)]
    n_new = 64
    ref = ours.generate(prompts, 1, temperature=0, pad_token_id=0)  # the left-padded batch, for transformers
    P = ref.prompt_length
    ids, mask = ref.sequences[:, :P], ref.attention_mask[:, :P]

    def hf_generate():
        with torch.no_grad():
            return hf.generate(ids, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new,
                               do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=True)

    cached = lambda: ours.generate(prompts, n_new, temperature=0, pad_token_id=0)
    t_hf, t_cached, ratio = paired(hf_generate, cached, args.repeats)
    rows.append((f"generate 32 prompts x {n_new} new, cache (s)", t_hf, t_cached, ratio, ">= 1.5"))

    # (3) ours with vs without cache
    uncached = lambda: ours.generate(prompts, n_new, temperature=0, pad_token_id=0, use_cache=False)
    t_nocache, t_cached2, ratio = paired(uncached, cached, max(2, args.repeats // 2))
    rows.append((f"ours: no cache / cache, {n_new} new (s)", t_nocache, t_cached2, ratio, ">= 4"))

    print(f"{'measurement':<44} {'HF / baseline':>13} {'minirlhf':>10} {'ratio':>7}  goal")
    for what, base, mine, ratio, goal in rows:
        ok = "ok" if ratio >= float(goal.split()[-1]) else "MISSED"
        print(f"{what:<44} {base:>13.4f} {mine:>10.4f} {ratio:>7.2f}  {goal} {ok}")
    print("\nsystem load average (1 min) at the end: %.1f on %d cores" % (os.getloadavg()[0], os.cpu_count()))
    print(f"(4) pre-training throughput, course preset, batch {B}x{T}: {train_tokens_per_s:,.0f} tokens/s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"    peak RSS of this process (both models, both optimisers): {peak_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
