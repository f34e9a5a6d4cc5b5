"""Beyond PPO: PPO, PPO-ptx, DPO, GRPO, RLOO and best-of-n distillation side by side, judged by the gold labeler.

Libraries that ship all of these (TRL, OpenRLHF) can only compare them on proxies: a learned reward, a judge model.
Here the gold labeler knows the truth, so the question "which method does better?" has an answer in this world:
the gold score each method reaches for the KL to SFT it spends (the frontier of Gao et al. 2022, per method).

From one run folder (its SFT checkpoint, its reward model and its comparison files), `run_compare` trains every
method from the same SFT model, sweeps each method's KL knob, evaluates every result the same way, and writes
`methods.json` and `methods.png` (gold against KL to SFT, one curve per method; the RM's reward beside it).

    method      KL knob   trains on                                            (module)
    ppo         β         rollouts scored by the RM, per-token KL in the reward, a value model   (ppo)
    ppo_ptx     β         the same + γ_ptx·pre-training loss                                     (ppo)
    grpo        β         G answers per prompt, group-normalised advantages, β·k3 in the loss   (grpo)
    rloo        β         G answers per prompt, leave-one-out baseline, KL in the reward        (grpo)
    dpo         β         the RM's comparisons themselves, no sampling, no RM               (dpo)
    best_of_n   n         SFT on the RM's favourite of n answers sampled from SFT           (distill)

What is matched (`CompareConfig`, `budget`):
  - every method: the SFT start, the train prompts, the answer length cap, the sampling temperature, the reward
    model (or, for DPO, the comparisons it was trained on), the seed, and the evaluation (the same held-out test
    prompts, the same sampling seed, the same judges);
  - policy samples: PPO, PPO-ptx, GRPO and RLOO draw `samples` answers in all (iterations × answers per
    iteration), and best-of-n draws the same number from SFT (samples / n prompts, n answers each);
  - gradient steps: PPO, PPO-ptx, GRPO, RLOO and DPO take the same number of Adam steps on the policy
    (iterations × epochs × minibatches for the on-line methods; DPO: that many batches of comparisons, one pass).
    Best-of-n fine-tunes on what it kept with SFT's loop (its own, smaller, number of steps).
  - not matched, and so reported: wall time and peak memory (PPO also trains a value model; DPO samples nothing).

Every result is evaluated like the pipeline's policies (evaluate.py): the gold score of sampled answers to the
test prompts, the win rate against SFT's answers (ties half), KL(π ‖ π_SFT) (nats per answer), the learned RM's
reward of the same answers (the proxy), and the pre-training loss (the alignment tax).
`reward="gold"` trains against the gold labeler itself (`GoldReward`; DPO on comparisons ranked by gold): the
oracle runs, which say how much of each method's result the reward model's errors cost.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from minirlhf import evaluate as ev
from minirlhf.checkpoint import load_checkpoint, write_text_atomic
from minirlhf.comparisons import load_comparisons
from minirlhf.distill import DistillConfig, train_best_of_n
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.ensemble import single_reward_model
from minirlhf.grpo import GRPOConfig, train_grpo
from minirlhf.model import pick_device
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.pretrain import evaluate_loss, token_stream
from minirlhf.reward import score_responses
from minirlhf.tokenizer import ASSISTANT, SPECIAL_IDS, encode_chat_prompt
from minirlhf.world import World, WorldConfig
from minirlhf.world.gold import gold_score

METHODS = ("ppo", "ppo_ptx", "dpo", "grpo", "rloo", "best_of_n")
NAMES = {"ppo": "PPO", "ppo_ptx": "PPO-ptx", "dpo": "DPO", "grpo": "GRPO", "rloo": "RLOO", "best_of_n": "best-of-n"}
COLORS = {"ppo": "tab:orange", "ppo_ptx": "tab:green", "dpo": "tab:red", "grpo": "tab:cyan", "rloo": "tab:olive",
          "best_of_n": "tab:purple", "sft": "tab:blue"}   # ppo, ppo_ptx, best_of_n, sft: the course's colours
TRAIN_FILES = ("comparisons_round1.jsonl", "comparisons_round2.jsonl")   # the main RM's training data
VAL_FILE = "comparisons_val.jsonl"


# ------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class CompareConfig:
    """The methods, their knobs and one budget for all. The default budget keeps each run under about 2 minutes on
    one CPU core (estimated from a 128-sample run of every method on the course checkpoints: DPO ~85 s, PPO-ptx
    ~80 s, PPO ~50 s, GRPO and RLOO ~25 s, best-of-n ~20 s per run, + ~5 s to evaluate each)."""

    methods: tuple = METHODS
    betas: tuple = (0.02, 0.1, 0.5)   # β swept for PPO, PPO-ptx, DPO, GRPO and RLOO (the same β in each objective)
    ns: tuple = (2, 4, 16)            # n swept for best-of-n (KL of best-of-n sampling: log n − (n−1)/n)
    samples: int = 1024               # policy samples per run (PPO: 32 iterations × 32 answers)
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(batch_size=32, lr=2e-5))   # the course's lr
    ptx_coef: float = 1.0             # γ_ptx of PPO-ptx (the course's)
    grpo: GRPOConfig = field(default_factory=lambda: GRPOConfig(prompts_per_iteration=8, group_size=4))
    rloo: GRPOConfig = field(default_factory=lambda: GRPOConfig(prompts_per_iteration=8, group_size=4,
                                                                advantage="rloo", kl_in="reward"))
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(batch_prompts=8))
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval_samples: int = 2             # sampled answers per test prompt (150 prompts × 2: a win rate's noise ≈ ±0.03)
    tax_documents: int = 2000         # held-out corpus documents for the pre-training loss (the pipeline's); 0 = skip
    ptx_documents: int | None = None  # corpus documents PPO-ptx mixes in (None: the world's corpus, as the pipeline)
    reward: str = "rm"                # "rm": the run's reward model; "gold": the gold labeler itself (oracle runs)
    seed: int = 0                     # every run's seed, and the evaluation's

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}; choose among {list(METHODS)}")
        if any(not b > 0 for b in self.betas) or not self.betas:
            raise ValueError(f"betas {self.betas}: give one or more β > 0 (DPO's implicit reward is β·log π/π_ref)")
        if any(n < 1 for n in self.ns) or not self.ns:
            raise ValueError(f"ns {self.ns}: give one or more n >= 1")
        if self.reward not in ("rm", "gold"):
            raise ValueError(f"reward {self.reward!r}: choose 'rm' (the learned reward model) or 'gold' (the labeler)")
        if self.eval_samples < 1:
            raise ValueError(f"eval_samples = {self.eval_samples}: must be >= 1")
        for name, batch in (("ppo.batch_size", self.ppo.batch_size), ("grpo.batch_size", self.grpo.batch_size),
                            ("rloo.batch_size", self.rloo.batch_size)):
            if self.samples < batch or self.samples % batch:
                raise ValueError(f"samples = {self.samples} is not a multiple of {name} = {batch}: every on-line "
                                 "method must draw the same number of answers")
        steps = {name: self.samples // c.batch_size * c.ppo_epochs * c.minibatches
                 for name, c in (("ppo", self.ppo), ("grpo", self.grpo), ("rloo", self.rloo))}
        lengths = {(c.max_new_tokens, c.temperature) for c in (self.ppo, self.grpo, self.rloo, self.distill)}
        if len(lengths) > 1:
            raise ValueError(f"the methods sample with different (max_new_tokens, temperature) {sorted(lengths)}; "
                             "give them all the same, as the evaluation uses PPO's")
        if len(set(steps.values())) > 1:
            raise ValueError(f"gradient steps differ between the on-line methods {steps}: give PPO, GRPO and RLOO the "
                             "same epochs × minibatches per rollout and the same answers per rollout")

    @property
    def budget(self) -> dict:
        """What every run gets: policy samples and Adam steps (see the module docstring)."""
        return {"samples": self.samples, "gradient_steps": self.samples // self.ppo.batch_size * self.ppo.ppo_epochs
                * self.ppo.minibatches, "dpo_comparisons": self.gradient_steps * self.dpo.batch_prompts}

    @property
    def gradient_steps(self) -> int:
        return self.samples // self.ppo.batch_size * self.ppo.ppo_epochs * self.ppo.minibatches


def quick_config(**overrides) -> CompareConfig:
    """A smoke check of every method in a minute or two: one knob value each, 64 samples, 1 answer per test prompt."""
    base = dict(betas=(0.1,), ns=(2,), samples=64, eval_samples=1)
    return CompareConfig(**{**base, **overrides})


# ------------------------------------------------------------------------------------------------------------
# The gold labeler as a reward model (oracle runs, and the tests)


class GoldReward(torch.nn.Module):
    """r(x, y) = the gold labeler's total score: forward(idx, attention_mask) -> (B,), a drop-in reward model.

    Each row (left- or right-padded, prompt then answer) is split after the longest prefix that is one of
    `prompts` in the chat format, the answer decoded and scored with world.gold.gold_score (ended = it finished
    with EOS). `config` (the policy's GPTConfig) tells reward.score_responses the context length.
    """

    def __init__(self, world, prompts: list, tokenizer, config):
        super().__init__()
        self.world, self.tokenizer, self.config = world, tokenizer, config
        self.by_ids = {tuple(encode_chat_prompt(tokenizer, p)): p for p in prompts}
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)   # gives the module a device

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask
        scores = []
        for row, real in zip(idx.tolist(), mask.tolist()):
            ids = [t for t, m in zip(row, real) if m]
            cuts = [i + 1 for i, t in enumerate(ids) if t == SPECIAL_IDS[ASSISTANT] and tuple(ids[:i + 1]) in self.by_ids]
            if not cuts:
                raise ValueError("GoldReward got a sequence that starts with none of its prompts; pass every prompt "
                                 "the policy answers to GoldReward(world, prompts, ...)")
            prompt, answer = self.by_ids[tuple(ids[:cuts[-1]])], ids[cuts[-1]:]
            ended = bool(answer) and answer[-1] == self.tokenizer.eos_token_id
            text = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
            scores.append(gold_score(self.world, prompt, text, ended).total)
        return torch.tensor(scores, device=idx.device)


def gold_ranked(comparisons: list) -> list:
    """The comparisons re-ranked by their noise-free gold scores (best first; ties keep the stored order)."""
    return [replace(c, ranking=sorted(c.ranking, key=lambda j: -c.gold[j])) for c in comparisons]


# ------------------------------------------------------------------------------------------------------------
# Measuring a run: wall time and peak memory


def _rss_high_water_mb() -> float | None:
    """The process's peak resident memory since the last reset (Linux: VmHWM), in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory while the block runs, in MiB: `peak_mb` (the whole process, models loaded before included) and
    `extra_mb` (above what it held at the start).

    On a GPU: CUDA's allocator peak. On Linux CPUs: the resident set's high-water mark, reset at the start
    (/proc/self/clear_refs). Elsewhere: the process's peak so far (getrusage), which may predate the block.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak_mb, self.extra_mb, self.kind = torch.device(device), float("nan"), float("nan"), ""

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda allocated"
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")   # resets VmHWM to the current resident set
            self.kind = "resident set"
        except OSError:
            self.kind = "resident set, process peak"
        self.start = _rss_high_water_mb() or 0.0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            import resource

            peak = _rss_high_water_mb()
            if peak is None:
                kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                peak = kib / 2**20 if sys.platform == "darwin" else kib / 1024   # macOS reports bytes
            self.peak_mb = peak
        self.extra_mb = self.peak_mb - self.start
        return False


# ------------------------------------------------------------------------------------------------------------
# What every run starts from


@dataclass
class Setup:
    """The shared start: SFT, the reward models, the prompts and comparisons, on one device."""

    sft: torch.nn.Module            # π_SFT: every method's start and KL anchor (frozen)
    rm: torch.nn.Module             # the run's learned reward model: the proxy every result is scored with
    reward: torch.nn.Module         # what the methods optimise: rm, or GoldReward
    tokenizer: object
    world: World
    train_prompts: list             # world Prompts the methods train on
    test_prompts: list              # world Prompts of the evaluation (× eval_samples)
    comparisons: list               # DPO's training comparisons (ranked by gold when reward = "gold")
    val_comparisons: list | None
    pretrain_ids: torch.Tensor | None   # PPO-ptx's pre-training token stream (None without ppo_ptx)
    val_ids: torch.Tensor | None        # held-out corpus tokens: the pre-training loss (None: not measured)

    @property
    def encoded(self) -> list[list[int]]:
        return [encode_chat_prompt(self.tokenizer, p) for p in self.train_prompts]


def load_setup(folder: Path, cfg: CompareConfig, checkpoints: Path | None = None, device=None) -> Setup:
    """Read a run folder: checkpoints sft/ and rm/ (in `checkpoints`, default the folder itself) and the comparison
    files of both rounds (+ comparisons_val.jsonl if present)."""
    folder, checkpoints = Path(folder), Path(checkpoints or folder)
    missing = [str(checkpoints / s) for s in ("sft", "rm") if not (checkpoints / s / "config.json").exists()]
    missing += [str(folder / f) for f in TRAIN_FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"compare needs a finished run's SFT and RM checkpoints and comparisons; missing "
                                f"{missing} (for the shipped run: compare data/run --checkpoints data/checkpoints)")
    device = device or pick_device()
    sft, tokenizer, _ = load_checkpoint(checkpoints / "sft", device=device)
    rm, _, _ = load_checkpoint(checkpoints / "rm", tokenizer=tokenizer, device=device)
    sft.requires_grad_(False)
    rm.requires_grad_(False)
    world = World(WorldConfig())
    train_prompts = world.prompts("train")
    comparisons = [c for f in TRAIN_FILES for c in load_comparisons(folder / f)]
    val = load_comparisons(folder / VAL_FILE) if (folder / VAL_FILE).exists() else None
    reward = rm
    if cfg.reward == "gold":
        reward = GoldReward(world, train_prompts, tokenizer, sft.config).to(device)
        comparisons, val = gold_ranked(comparisons), val and gold_ranked(val)
    pretrain_ids = (token_stream(tokenizer, [d.text for d in world.corpus(cfg.ptx_documents)])
                    if "ppo_ptx" in cfg.methods else None)
    val_ids = (token_stream(tokenizer, [d.text for d in world.corpus(cfg.tax_documents, phase="val")])
               if cfg.tax_documents else None)
    return Setup(sft.eval(), rm.eval(), reward, tokenizer, world, train_prompts, world.prompts("test"), comparisons,
                 val, pretrain_ids, val_ids)


# ------------------------------------------------------------------------------------------------------------
# One run per method and knob value


def _trainable(model):
    return copy.deepcopy(model).requires_grad_(True)


def draw(items: list, count: int, seed: int) -> list:
    """`count` items in a seeded random order, every item once before any repeats (cycling when count > len)."""
    rng, out = random.Random(seed), []
    while len(out) < count:
        order = list(range(len(items)))
        rng.shuffle(order)
        out += [items[i] for i in order[:count - len(out)]]
    return out


def train_method(method: str, knob: float, setup: Setup, cfg: CompareConfig, progress: bool = False):
    """Train one method from SFT with its KL knob set to `knob` (β, or n for best-of-n). Returns (policy, history)."""
    sft, tokenizer, seed = setup.sft, setup.tokenizer, cfg.seed
    policy = _trainable(sft)
    gold = ev.rollout_gold(setup.world, setup.train_prompts, tokenizer)
    if method in ("ppo", "ppo_ptx"):
        ppo_cfg = replace(cfg.ppo, iterations=cfg.samples // cfg.ppo.batch_size, init_kl_coef=knob, adaptive_kl=False,
                          ptx_coef=cfg.ptx_coef if method == "ppo_ptx" else 0.0, seed=seed)
        return train_ppo(policy, setup.encoded, ppo_cfg, reference=sft, reward_model=setup.reward,
                         value_model=_trainable(single_reward_model(setup.rm)), tokenizer=tokenizer,
                         pretrain_ids=setup.pretrain_ids if method == "ppo_ptx" else None, eval_fn=gold,
                         progress=progress)
    if method in ("grpo", "rloo"):
        base = cfg.grpo if method == "grpo" else cfg.rloo
        grpo_cfg = replace(base, iterations=cfg.samples // base.batch_size, beta=knob, seed=seed)
        return train_grpo(policy, setup.encoded, grpo_cfg, reference=sft, reward_model=setup.reward,
                          tokenizer=tokenizer, eval_fn=gold, progress=progress)
    if method == "dpo":
        data = draw(setup.comparisons, cfg.gradient_steps * cfg.dpo.batch_prompts, seed)   # one pass, matched steps
        return train_dpo(policy, (data, setup.val_comparisons), replace(cfg.dpo, beta=knob, epochs=1, seed=seed),
                         reference=sft, tokenizer=tokenizer, progress=progress)
    if method == "best_of_n":
        n = int(knob)
        prompts = draw(setup.train_prompts, max(1, cfg.samples // n), seed)   # samples / n prompts × n answers
        return train_best_of_n(policy, prompts, replace(cfg.distill, n=n, seed=seed), reward_model=setup.reward,
                               tokenizer=tokenizer, progress=progress)
    raise ValueError(f"unknown method {method!r}; choose among {list(METHODS)}")


def evaluate_policy(policy, setup: Setup, sft_samples: ev.Samples | None, cfg: CompareConfig) -> tuple[dict, ev.Samples]:
    """Gold score and criteria, win rate vs SFT's answers, KL to SFT, the learned RM's reward and the pre-training
    loss, on the test prompts (eval_samples answers each, the evaluation seed). Returns (summary, samples)."""
    prompts, T, L = setup.test_prompts * cfg.eval_samples, cfg.ppo.temperature, cfg.ppo.max_new_tokens
    samples = ev.sample_answers(policy, setup.tokenizer, setup.world, prompts, T, L, cfg.seed)
    baseline = sft_samples or samples
    summary = {**ev.summarize(samples),
               "win_rate_vs_sft": ev.win_rate(samples.gold_totals, baseline.gold_totals),
               "kl_to_sft": ev.kl_to_reference(policy, setup.sft, samples, T),
               "rm_reward": float(score_responses(setup.rm, setup.tokenizer, prompts, samples.texts, samples.ended).mean()),
               "pretrain_val_loss": (evaluate_loss(policy, setup.val_ids, max_batches=4) if setup.val_ids is not None
                                     else float("nan"))}
    return summary, samples


HISTORY_KEYS = ("rm_reward", "gold", "kl", "loss", "margin", "accuracy", "val_accuracy", "rm_reward_best")


def knob_values(method: str, cfg: CompareConfig) -> tuple:
    return cfg.ns if method == "best_of_n" else cfg.betas


def run_compare(folder: str | Path, cfg: CompareConfig | None = None, *, checkpoints: str | Path | None = None,
                out: str | Path | None = None, progress: bool = True) -> dict:
    """Train and evaluate every method × knob value from the run in `folder`; write out/methods.json (after every
    run, so an interrupted comparison keeps what finished) and out/methods.png. `out` defaults to `folder`.

    Returns {"config", "budget", "matched", "device", "sft": evaluation, "methods": {method: [point, ...]}}; a
    point: {"knob", "value", evaluation keys (gold, win_rate_vs_sft, kl_to_sft, rm_reward, ...), "seconds",
    "eval_seconds", "peak_memory_mb", "extra_memory_mb", "history": a few per-iteration curves}.
    """
    cfg = cfg or CompareConfig()
    out = Path(out or folder)
    setup = load_setup(Path(folder), cfg, checkpoints)
    device = next(setup.sft.parameters()).device
    sft_eval, sft_samples = evaluate_policy(setup.sft, setup, None, cfg)
    if progress:
        print(f"[SFT] gold {sft_eval['gold']:.3f}, RM {sft_eval['rm_reward']:.3f}", flush=True)
    result = {"config": asdict(cfg), "budget": cfg.budget, "matched": MATCHED, "device": str(device),
              "torch_threads": torch.get_num_threads(), "memory": "", "sft": sft_eval, "methods": {}}
    for method in cfg.methods:
        for value in knob_values(method, cfg):
            torch.manual_seed(cfg.seed)
            start = time.perf_counter()
            with PeakMemory(device) as memory:
                policy, history = train_method(method, value, setup, cfg, progress)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            summary, _ = evaluate_policy(policy, setup, sft_samples, cfg)
            point = {"knob": "n" if method == "best_of_n" else "beta", "value": value, **summary,
                     "seconds": seconds, "eval_seconds": time.perf_counter() - start,
                     "peak_memory_mb": memory.peak_mb, "extra_memory_mb": memory.extra_mb,
                     "history": {k: history[k] for k in HISTORY_KEYS if k in history}}
            result["memory"] = memory.kind
            result["methods"].setdefault(method, []).append(point)
            if progress:
                print(f"[{NAMES[method]} {point['knob']}={value:g}] gold {summary['gold']:.3f}, "
                      f"KL {summary['kl_to_sft']:.2f}, RM {summary['rm_reward']:.3f}, {seconds:.0f} s", flush=True)
            write_text_atomic(out / "methods.json", json.dumps(result, indent=2, default=float))
    from minirlhf.course.plots import save_figure

    save_figure(plot_methods(result), out / "methods.png")
    return result


MATCHED = ("every method starts from the same SFT model and trains on the same prompts, with the same answer length, "
           "temperature, reward model (DPO: the comparisons it was trained on) and seed; PPO, PPO-ptx, GRPO, RLOO and "
           "best-of-n draw the same number of policy samples; PPO, PPO-ptx, GRPO, RLOO and DPO take the same number "
           "of Adam steps; wall time and peak memory are not matched but measured")


# ------------------------------------------------------------------------------------------------------------
# Reading the result


def best_under_kl(result: dict, max_kl: float) -> dict:
    """Per method, the point with the highest gold score among those with KL to SFT ≤ max_kl (methods with no such
    point are left out): which method does best for a given KL budget."""
    best = {}
    for method, points in result["methods"].items():
        within = [p for p in points if p["kl_to_sft"] <= max_kl]
        if within:
            best[method] = max(within, key=lambda p: p["gold"])
    return best


def methods_table(result: dict) -> str:
    """A Markdown table: one row per method and knob value, SFT first."""
    rows = ["| method | knob | gold | win rate vs SFT | KL to SFT (nats) | RM reward | pre-training loss | "
            "train time (s) | peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    s = result["sft"]
    rows.append(f"| SFT | | {s['gold']:.3f} | 0.500 | 0 | {s['rm_reward']:.3f} | {s['pretrain_val_loss']:.3f} | | |")
    for method, points in result["methods"].items():
        for p in points:
            knob = f"{'β' if p['knob'] == 'beta' else 'n'} = {p['value']:g}"
            rows.append(f"| {NAMES.get(method, method)} | {knob} | {p['gold']:.3f} | {p['win_rate_vs_sft']:.3f} | "
                        f"{p['kl_to_sft']:.2f} | {p['rm_reward']:.3f} | {p['pretrain_val_loss']:.3f} | "
                        f"{p['seconds']:.0f} | {p['peak_memory_mb']:.0f} |")
    return "\n".join(rows)


def plot_methods(result: dict):
    """Two panels against KL to SFT: the gold score (what we want) and the RM's reward (the proxy), a curve per
    method through its knob values, SFT at KL 0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    sft = result["sft"]
    for ax, key, label in ((axes[0], "gold", "gold score (0–1)"), (axes[1], "rm_reward", "RM reward r_θ (proxy)")):
        ax.plot([0.0], [sft[key]], "*", ms=12, color=COLORS["sft"], label="SFT")
        for method, points in result["methods"].items():
            points = sorted(points, key=lambda p: p["kl_to_sft"])
            ax.plot([p["kl_to_sft"] for p in points], [p[key] for p in points], "o-", color=COLORS.get(method),
                    label=NAMES.get(method, method))
            for p in points:
                ax.annotate(f"{'β' if p['knob'] == 'beta' else 'n'}={p['value']:g}", (p["kl_to_sft"], p[key]),
                            textcoords="offset points", xytext=(4, 3), fontsize="x-small", color=COLORS.get(method))
        ax.set_xlabel("KL(π ‖ π_SFT) (nats per answer)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3, linewidth=0.6)
    optimised = "the gold labeler" if result["config"]["reward"] == "gold" else "this reward model"
    axes[0].set_title("gold score: what we want")
    axes[1].set_title(f"RM reward: the proxy (the methods optimised {optimised})")
    axes[0].legend(fontsize="small")
    budget = result["budget"]
    fig.suptitle(f"Methods at matched budgets ({budget['samples']} policy samples, {budget['gradient_steps']} Adam "
                 "steps): gold and proxy against KL to SFT")
    return fig


# ------------------------------------------------------------------------------------------------------------
# Command line: python -m minirlhf compare RUN


def config_from_args(args) -> CompareConfig:
    """CompareConfig from the `compare` sub-command's arguments (parsed and range-checked in minirlhf.__main__)."""
    overrides = {"methods": args.methods, "reward": args.reward, "seed": args.seed}
    if args.betas:
        overrides["betas"] = args.betas
    if args.ns:
        overrides["ns"] = args.ns
    if args.samples:
        overrides["samples"] = args.samples
    return quick_config(**overrides) if args.quick else CompareConfig(**overrides)


def main(args) -> dict:
    """`python -m minirlhf compare RUN`: run the comparison, print the table."""
    result = run_compare(Path(args.run), config_from_args(args), checkpoints=args.checkpoints, out=args.out)
    print(methods_table(result))
    print(f"wrote {Path(args.out or args.run) / 'methods.json'} and methods.png")
    return result


if __name__ == "__main__":   # python -m minirlhf.compare RUN = python -m minirlhf compare RUN
    from minirlhf.__main__ import main as command_line

    sys.exit(command_line(["compare", *sys.argv[1:]]))
