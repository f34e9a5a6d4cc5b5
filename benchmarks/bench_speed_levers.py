"""Levers for the course pipeline's time goal, measured side by side: a course-preset pre-training step in eager
fp32 (what the pipeline runs) against the same step under bf16 autocast on the CPU and under torch.compile.

    python benchmarks/bench_speed_levers.py              # about two minutes on 2 cores

Pre-training is about a third of the course pipeline's wall time and every other stage is made of the same
forward and backward passes, so a step's ratio is a fair first estimate of what a lever would save overall. The
script also prints how far each lever's logits are from eager fp32's on the same weights and batch: a lever that
changes the numbers means a new shipped run, not a free speed-up.
bf16 pays off only on CPUs with native bf16 instructions (avx512_bf16 or AMX); torch.compile needs a C++ compiler.
The pairs run alternately (A, B, A, B, ...), so a busy machine slows both sides alike (bench_model.paired).
"""

from __future__ import annotations

import contextlib
import copy
import platform
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import benchmark_args, paired  # noqa: E402

from minirlhf.model import GPT, get_config  # noqa: E402


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def precision(bf16: bool):
    """bf16 autocast on the CPU, or nothing (eager fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def make_step(model: GPT, batches: list, bf16: bool):
    """One pre-training step (forward, backward, AdamW) on the next batch; returns the loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    state = {"i": 0}

    def step() -> float:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with precision(bf16):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


@torch.no_grad()
def logits_of(model, x, bf16: bool) -> torch.Tensor:
    with precision(bf16):
        return model(x)[0].float()


def main():
    args = benchmark_args(__doc__, repeats=7)
    config = get_config("course")
    B, T = 32, config.block_size   # the pipeline's pre-training batch: 32 x 128 tokens
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(8):
        x = torch.randint(0, config.vocab_size, (B, T + 1), generator=gen)
        batches.append((x[:, :-1], x[:, 1:]))
    flags = cpu_flags()
    native_bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["none"]
    compiler = shutil.which("cc") or shutil.which("gcc")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"native bf16: {', '.join(native_bf16)}; C compiler: {compiler or 'none'}")
    print(f"course preset, batch {B}x{T}; {args.repeats} alternating pairs after a warm-up\n")

    base = GPT(config).train()
    levers = [("bf16 autocast", lambda m: m, True)]
    if compiler:
        levers += [("torch.compile", torch.compile, False), ("torch.compile + bf16 autocast", torch.compile, True)]
    x = batches[0][0]
    fp32_logits = logits_of(copy.deepcopy(base).eval(), x, False)
    print(f"{'lever':<32} {'fp32 (s)':>9} {'lever (s)':>10} {'speed-up':>9} {'max |Δ logit|':>14}")
    for name, wrap, bf16 in levers:
        try:
            eager = make_step(copy.deepcopy(base), batches, False)
            lever = make_step(wrap(copy.deepcopy(base)), batches, bf16)
            lever()   # compile (or warm up) outside the timed pairs
            t_base, t_lever, ratio = paired(eager, lever, args.repeats)
            drift = (logits_of(wrap(copy.deepcopy(base).eval()), x, bf16) - fp32_logits).abs().max().item()
        except Exception as e:   # a lever this machine cannot run is reported, not fatal
            print(f"{name:<32} failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
            continue
        print(f"{name:<32} {t_base:>9.4f} {t_lever:>10.4f} {ratio:>8.2f}x {drift:>14.2e}")
    print(f"\n(speed-up: eager fp32's step time ÷ the lever's; max |Δ logit|: the lever's logits against eager fp32's, "
          f"same weights, one batch; fp32 logits span ±{fp32_logits.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
