"""The whole road, stage by stage, into one run folder (`python -m minirlhf pipeline`).

Like nanochat's speedrun.sh, the road is one short list, run top to bottom (`STAGES`, below):

    pretrained/                a BPE tokenizer and a GPT pre-trained on the world's corpus (the L1 objective)
    sft/                       step 1: supervised fine-tuning on the demonstrations
    comparisons_round1.jsonl   round 1 of comparisons: pre-trained and SFT answers, ranked by the noisy labelers
    rm_round1/                 step 2 on round 1 only: RM-1 (kept: the reward model trained on less data)
    ppo_round1/                a short PPO against RM-1: PPO-1, a newer policy to collect comparisons on
    comparisons_round2.jsonl   round 2: SFT, PPO-1 and pre-trained answers, ranked
    rm/                        the main reward model, again from the SFT trunk, on both rounds
    ppo/, ppo_ptx/             step 3: PPO and PPO-ptx against the main reward model
    evaluation.json            held-out test prompts: gold, win rates, KL, alignment tax, the chat's use of history
    overoptimisation.json      best-of-n and PPO at β = 0: gold against √KL for RM-1 and the main RM (Gao et al.)

then metrics.json, report.md and the figures. Each stage is a function `stage_<name>(run) -> metrics` that reads
what earlier stages wrote in the run folder and writes its own output atomically; `--resume` skips a stage whose
output exists and whose metrics were recorded, so an interrupted run (Ctrl-C) keeps what it finished. `run_seeds`
runs several seeds into seed-S/ folders and writes the seeds' aggregate metrics.json and report.md above them.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from minirlhf import evaluate as ev
from minirlhf.checkpoint import (
    load_checkpoint,
    read_config,
    read_metadata,
    save_checkpoint,
    write_text_atomic,
)
from minirlhf.comparisons import (
    ComparisonConfig,
    ceiling_of,
    fact_contrast_share,
    load_comparisons,
    sample_comparisons,
    save_comparisons,
)
from minirlhf.ensemble import single_reward_model, train_reward_ensemble
from minirlhf.model import GPT, GPTConfig, get_config, pick_device
from minirlhf.overoptimisation import best_of_n_curve, fit_best_of_n, fit_rl
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.pretrain import (
    PretrainConfig,
    document_rows,
    probe_batch,
    rows_loss,
    stage_tokens,
    token_stream,
    train_pretrain,
)
from minirlhf.probes import probe_accuracy, probe_pairs
from minirlhf.reward import (
    READOUTS,
    RewardConfig,
    RewardModel,
    normalize_reward,
    pairwise_accuracy,
    score_responses,
    train_reward_model,
)
from minirlhf.runfolder import RunFolder, snapshot, written_since
from minirlhf.sft import SFTConfig, train_sft
from minirlhf.tokenizer import encode_chat_prompt, train_tokenizer
from minirlhf.validate import check_integers, check_numbers
from minirlhf.world import World, WorldConfig
from minirlhf.world.corpus import Corpus, CorpusMix, lookup_probe_rows, phases_for
from minirlhf.world.gold import FLAGS

# ------------------------------------------------------------------------------------------------------------
# Configuration: one dataclass of stage configs, two presets


@dataclass
class OveroptimisationConfig:
    prompts: int = 60                   # val prompts that best-of-n samples answers for
    samples: int = 64                   # N answers per prompt, sampled once: best-of-n for n = 1, 2, 4, ..., N
    rl_iterations: int = 80             # PPO at β = 0 against each reward model below, from SFT
    reward_models: tuple = ("rm_round1",)   # add "rm" for β = 0 against the main RM too (80 more iterations)


@dataclass
class PipelineConfig:
    """Every stage's settings for one preset (PIPELINES). Budgets measured on 2 CPU cores (docs/calibration.md)."""
    name: str = "course"
    model: GPTConfig = field(default_factory=lambda: get_config("course"))   # its vocab_size: the BPE vocabulary
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    corpus: CorpusMix = field(default_factory=CorpusMix)   # document kinds per phase of the curriculum
    val_documents: int = 2000           # held-out final-mix documents: validation loss and its entropy floor
    icl_episodes: int = 100             # episodes per point of the in-context-learning curves
    sft: SFTConfig = field(default_factory=SFTConfig)
    comparisons: ComparisonConfig = field(default_factory=ComparisonConfig)
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(epochs=5, lr=3e-4))   # the main RM: accuracy
    # still rises in epoch 3-4 at this scale and the wrong-fact probe in epoch 5 (docs/calibration.md), unlike
    # InstructGPT's 1 epoch
    reward_members: int = 1             # the main RM as an ensemble of this many RMs (ensemble.py), each trained
    # as `reward` says, their rewards averaged; 1: one RM (three seeds with 3 did not beat one: docs/calibration.md).
    # RM-1 is always one RM
    reward_readout: str = "last"        # where both RMs read r_θ: "last" token (InstructGPT) or "sum" over tokens
    # (reward.READOUTS; "sum" sees wrong facts better and the end token worse: docs/calibration.md)
    reward_surprise: float = 0.0        # λ: both RMs lose λ per nat of the SFT model's surprise at the answer
    # (reward.py; 0: InstructGPT's RM). 0.1 closes the wrong-fact blind spot on three seeds but costs RM accuracy and
    # the proxy RM's over-optimisation (docs/calibration.md)
    round1_reward_epochs: int = 2       # RM-1, the weaker proxy: round 1's data only, 2 passes
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(iterations=60, lr=2e-5))  # its max_new_tokens caps
    # every sampled answer (comparisons, evaluation); its ptx_coef is 0: PPO-ptx is the same run with ptx_coef below
    ptx_coef: float = 1.0               # γ_ptx of the PPO-ptx run (toy scale; InstructGPT: 27.8)
    round1_ppo_iterations: int = 30     # PPO-1: cfg.ppo against RM-1 for this many iterations
    overoptimisation: OveroptimisationConfig = field(default_factory=OveroptimisationConfig)
    eval_temperature: float = 1.0       # answers are sampled (greedy decoding hides the differences)
    eval_samples: int = 4               # answers per test prompt: 150 prompts x 4 makes a win rate's noise ±0.02

    def __post_init__(self):
        check_integers(self, reward_members=1)   # 1: one RM
        check_numbers(self, reward_surprise="≥")
        if self.reward_readout not in READOUTS:
            raise ValueError(f"reward_readout={self.reward_readout!r}: give one of {', '.join(READOUTS)}")
        if self.ppo.ptx_coef != 0:
            raise ValueError(f"cfg.ppo is the PPO run (ptx_coef 0, got {self.ppo.ptx_coef}); "
                             "set PipelineConfig.ptx_coef for the PPO-ptx run")

    @property
    def max_new_tokens(self) -> int:
        """The answer length cap everywhere: PPO's rollouts, comparisons and evaluation."""
        return self.ppo.max_new_tokens


def smoke_config() -> PipelineConfig:
    """A smoke run of about a minute: every stage runs, nothing is meaningful. The tiny model with a context of 128,
    not its 64: the longest chat prompt (a follow-up with its history) is ~71 tokens with a 512-token BPE."""
    return PipelineConfig(
        name="smoke", model=get_config("tiny", vocab_size=512, block_size=128),
        pretrain=PretrainConfig(steps=120, tokens_per_step=2048, curriculum=((0, 32), (40, 64), (80, 128)),
                                lr=3e-3, min_lr=3e-4, warmup_steps=20, eval_every=40, probe_every=20),
        val_documents=300, icl_episodes=10,
        sft=SFTConfig(epochs=2, lr=1e-3),
        comparisons=ComparisonConfig(k=4, round1_passes=1, round2_passes=1),
        reward=RewardConfig(epochs=1, lr=3e-4), reward_members=2, round1_reward_epochs=1,
        ppo=PPOConfig(iterations=3, batch_size=16, max_new_tokens=16),
        round1_ppo_iterations=2,
        overoptimisation=OveroptimisationConfig(prompts=8, samples=4, rl_iterations=3), eval_samples=1,
    )


def gpu_config() -> PipelineConfig:
    """For one modern GPU (docs/scaling.md): the `gpu` model (26M parameters, 28x the course's; a context of
    256, twice its), pre-trained on 4x the course's tokens (a fresh corpus stream all the way); the later stages
    as in the course, at learning rates for the larger model. Sized to finish in about 10 minutes on one
    H100-class GPU (not measured yet: benchmarks/gpu_check.sh measures it); on a CPU it takes hours."""
    return PipelineConfig(
        name="gpu", model=get_config("gpu"),
        pretrain=PretrainConfig(steps=2000, tokens_per_step=16384, curriculum=((0, 64), (250, 128), (500, 256)),
                                lr=1e-3, min_lr=1e-4, warmup_steps=200, eval_every=250),
        sft=SFTConfig(lr=1e-4),
        reward=RewardConfig(epochs=2, lr=1e-4),
        ppo=PPOConfig(iterations=60, lr=1e-5),
    )


PIPELINES = {"smoke": smoke_config, "course": PipelineConfig,   # names differ from the model sizes (model.PRESETS),
             "gpu": gpu_config}                                # but for gpu: the gpu model


def pipeline_config(name: str) -> PipelineConfig:
    """A preset: `smoke` (every stage, about a minute) or `course` (the notebooks' run)."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline preset {name!r}; choose one of {sorted(PIPELINES)}")
    return PIPELINES[name]()


# ------------------------------------------------------------------------------------------------------------
# Pre-training data


def corpus_entropy_floor(documents, tokenizer) -> float:
    """The corpus's entropy per token (nats): Σ_doc H(doc) / Σ_doc tokens(doc) (one EOS per document counted).

    Each document records the log-probability of the random choices that generated it, so its entropy is known
    exactly; no model can have a lower expected loss per token on fresh documents from the same generator.
    """
    encoded = tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
    return sum(d.nats for d in documents) / sum(len(ids) + 1 for ids in encoded)


def write_json_atomic(path: Path, data) -> None:
    """Write JSON atomically: a reader (or a crash) never sees half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, default=float))


def pretrain_stream(world: World, tokenizer, n_val: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) token streams: the corpus sample (PPO-ptx's data) and the held-out validation documents
    (pre-training's validation loss; on them the later policies' loss measures the alignment tax)."""
    return (token_stream(tokenizer, [d.text for d in world.corpus()]),
            token_stream(tokenizer, [d.text for d in world.corpus(n_val, phase="val")]))


def fresh_stream(corpus: Corpus, tokenizer, phase: str, n_tokens: int, start: int = 0,
                 chunk: int = 1000) -> tuple[torch.Tensor, int]:
    """Documents start, start+1, ... of a corpus phase as one token stream of at least n_tokens tokens (generated
    and tokenized chunk by chunk, so only the tokens are kept). Returns (stream, index of the next document)."""
    parts, have, i = [], 0, start
    while have < n_tokens:
        part = token_stream(tokenizer, [d.text for d in corpus.documents(phase, chunk, i)]).to(torch.int32)
        parts.append(part)
        have, i = have + len(part), i + chunk
    return (torch.cat(parts).long() if parts else torch.zeros(0, dtype=torch.long)), i


def pretraining_data(corpus: Corpus, tokenizer, pcfg: PretrainConfig, block_size: int, n_val: int = 2000):
    """(train streams, one per curriculum stage; validation rows; lookup probe) and the validation documents.

    Stage i reads phase i of the corpus (world/corpus.py: phases_for), sized to the tokens it will read
    (stage_tokens), so pre-training sees every document once: a fresh, never-repeated stream.
    """
    needs = stage_tokens(pcfg, block_size)
    next_doc: dict[str, int] = {}
    streams = []
    for phase, need in zip(phases_for(len(needs)), needs):
        stream, next_doc[phase] = fresh_stream(corpus, tokenizer, phase, need, next_doc.get(phase, 0))
        streams.append(stream)
    val_docs = corpus.documents("val", n_val)   # read whole, from their start: the floor's own accounting
    val_rows = document_rows(tokenizer, [d.text for d in val_docs], block_size)
    probe = probe_batch(tokenizer, lookup_probe_rows(corpus.world), block_size)
    return (streams, val_rows, probe), val_docs


# ------------------------------------------------------------------------------------------------------------
# Pre-training (also `python -m minirlhf pretrain`)


def pretrain_model(out: Path, cfg: PipelineConfig, seed: int = 0, world: World | None = None, icl: bool = True,
                   progress: bool = True) -> dict:
    """Train the tokenizer and pre-train a GPT on the world's corpus (the L1 objective); save to `out`.
    Returns the metrics (also in the checkpoint's metadata)."""
    torch.manual_seed(seed)
    world = world or World(WorldConfig())
    corpus = Corpus(world, cfg.corpus)
    sample = corpus.documents("final", world.config.n_documents)   # the tokenizer learns from a sample
    tokenizer = train_tokenizer([d.text for d in sample], vocab_size=cfg.model.vocab_size)
    pcfg = replace(cfg.pretrain, seed=seed)
    start = time.perf_counter()
    data, val_docs = pretraining_data(corpus, tokenizer, pcfg, cfg.model.block_size, cfg.val_documents)
    generate_seconds = time.perf_counter() - start
    model = GPT(replace(cfg.model, vocab_size=len(tokenizer))).to(pick_device())
    model, history = train_pretrain(model, data, pcfg, progress=progress)
    val_loss, floor = rows_loss(model, data[1]), corpus_entropy_floor(val_docs, tokenizer)
    metrics = {"val_loss": val_loss, "entropy_floor": floor, "val_over_floor": val_loss / floor,
               "train_tokens": sum(len(s) for s in data[0]), "parameters": model.num_parameters(),
               "seconds": history["seconds"][-1], "tokens_per_s": history["tokens_per_s"][-1],
               "generate_seconds": generate_seconds, "probe_loss": history["probe_loss"][-1]}
    if icl:
        from minirlhf.prompting import icl_curve, icl_task_curve, zero_shot_accuracy

        n = cfg.icl_episodes
        metrics["icl"] = icl_curve(model, tokenizer, world, n_episodes=n, seed=seed)
        metrics["icl_task"] = icl_task_curve(model, tokenizer, world, n_episodes=n, seed=seed)
        metrics["zero_shot"] = {kind: zero_shot_accuracy(model, tokenizer, world, kind, n_episodes=n, seed=seed)
                                for kind in ("colour", "food", "home")}
    save_checkpoint(out, model, tokenizer, stage="pretrained",
                    metadata={"seed": seed, "preset": cfg.name, "config": asdict(pcfg), "metrics": metrics,
                              "history": history})
    return metrics


# ------------------------------------------------------------------------------------------------------------
# A run: one seed's folder, and what its stages wrote there


MAX_SEED = 2**32 - 1   # every stage's seed 1000·seed + i, and the samplers' seeds made from it, stay in torch's range
RUN_FILES = ("comparisons_val.jsonl", "metrics.json", "report.md")   # a run writes these besides STAGES (and *.png)


def _done(path: Path) -> bool:
    return (path / "config.json").exists() if path.suffix == "" else path.exists()


def _load_problem(path: Path) -> str | None:
    """Why a stage's output does not load, or None (for runs made before run.json, which have no checksums)."""
    try:
        if path.suffix == "":
            load_checkpoint(path)
        elif path.suffix == ".jsonl":
            load_comparisons(path)
        else:
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return str(error)
    return None


def _given_checkpoint(stage: str, path) -> Path:
    """A checkpoint given instead of running a stage (--pretrained), checked before anything runs: a GPT's."""
    path = Path(path)
    if not _done(path):
        raise FileNotFoundError(f"no {stage} checkpoint in {path} (expected {path}/config.json)")
    architecture = read_config(path)["architecture"]
    if architecture != "GPT":
        raise ValueError(f"{path} holds a {architecture} (stage {read_metadata(path).get('stage')!r}), not a GPT: "
                         f"give a {stage} checkpoint, e.g. data/checkpoints/{stage}")
    return path


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024   # macOS: bytes; Linux: KiB


class Run:
    """One seed's run folder: its config, the world, the seed, and the checkpoints its stages wrote (loaded once)."""

    def __init__(self, folder: Path, cfg: PipelineConfig, seed: int = 0, pretrained: Path | None = None,
                 progress: bool = True, world: WorldConfig | None = None):
        if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed={seed!r}: give an integer from 0 to {MAX_SEED}")
        self.folder, self.cfg, self.seed, self.progress = Path(folder), cfg, seed, progress
        self.world = World(world or WorldConfig())   # the course's world: seeds vary the training, not the world
        self.device = pick_device()
        self.given = {"pretrained": _given_checkpoint("pretrained", pretrained)} if pretrained is not None else {}
        self.record: RunFolder | None = None   # run.json, while run_pipeline holds the folder
        self.metrics: dict = {}
        self._models: dict = {}
        self._tokenizer = None
        self._streams = None
        self.loaded: list[str] = []   # the checkpoints loaded during the current stage (run.json: its "loads")

    def path(self, stage: str) -> Path:
        """Where a stage's output lives: STAGES says, unless it was given (--pretrained)."""
        return self.given.get(stage, self.folder / OUTPUTS[stage])

    def seed_for(self, stage: str) -> int:
        """The seed of one stage, derived here and only here: a resumed stage draws what it drew the first time."""
        return 1000 * self.seed + list(OUTPUTS).index(stage)

    def model(self, stage: str):
        """A stage's checkpoint (GPT or RewardModel), loaded once, in eval mode; train copies of it, not it."""
        if stage not in self._models:
            model, tokenizer, _ = load_checkpoint(self.path(stage), tokenizer=self._tokenizer, device=self.device)
            self._tokenizer = self._tokenizer or tokenizer
            self._models[stage] = model.eval()
            self.loaded.append(stage)
        return self._models[stage]

    @property
    def tokenizer(self):
        """The pre-trained checkpoint's tokenizer (every later checkpoint shares it)."""
        if self._tokenizer is None:
            self.model("pretrained")
        return self._tokenizer

    @property
    def streams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) pre-training token streams: PPO-ptx's data and the alignment tax's yardstick."""
        if self._streams is None:
            self._streams = pretrain_stream(self.world, self.tokenizer, self.cfg.val_documents)
        return self._streams

    def stage(self, name: str, fn, resume: bool) -> None:
        """Run one stage, time it, and record in run.json the files it wrote (with their checksums) and its metrics.
        Resuming, skip a stage that finished and whose files are intact; a damaged one is redone, and so is every
        stage after it (they were built on it). A given stage (--pretrained) is recorded, not run."""
        output = self.path(name)
        if resume and self.finished(name):
            print(f"[{name}] {output} exists: skipped (--resume)")
            return
        self.record.forget(list(OUTPUTS)[list(OUTPUTS).index(name):])   # this stage and every later one: redone
        self.record.legacy = None
        if name in self.given:
            self.metrics[name] = read_metadata(output).get("metrics", {})
            self.record.finish(name, [output], metrics=self.metrics[name])
            print(f"[{name}] using {output}")
            return
        print(f"[{name}] running", flush=True)
        for earlier in list(OUTPUTS)[:list(OUTPUTS).index(name)]:   # what a run without a break holds by now: a
            for stage in self.record.stages.get(earlier, {}).get("loads", []):   # stage that loads a checkpoint
                self.model(stage)   # draws random numbers (its init), so a resumed stage must not load more
        before, self.loaded = snapshot(self.folder, ignore=("metrics.json",)), []
        torch.manual_seed(self.seed_for(name))
        start = time.perf_counter()
        self.metrics[name] = fn(self)
        wall = self.metrics.setdefault("wall_seconds", {})[name] = time.perf_counter() - start
        rss = self.metrics.setdefault("peak_rss_mb", {})[name] = _peak_rss_mb()
        threads = self.metrics.setdefault("stage_threads", {})[name] = torch.get_num_threads()
        self.record.finish(name, written_since(self.folder, before, ignore=("metrics.json",)),
                           metrics=self.metrics[name], wall_seconds=wall, peak_rss_mb=rss, stage_threads=threads,
                           loads=self.loaded)
        write_json_atomic(self.folder / "metrics.json", self.metrics)   # a crash later keeps what finished

    def finished(self, name: str) -> bool:
        """Whether a stage may be skipped: recorded in run.json with its files intact (in a run made before
        run.json: its metrics in metrics.json and an output that loads). Takes its metrics from the record."""
        entry = self.record.stages.get(name) or self._adopt(name)
        if entry is None:
            return False
        problem = self.record.damage(name)
        if problem is not None:
            print(f"[{name}] {problem}: redoing {name} and every stage after it")
            return False
        self.metrics[name] = entry["metrics"]
        for key in ("wall_seconds", "peak_rss_mb", "stage_threads"):
            if key in entry:
                self.metrics.setdefault(key, {})[name] = entry[key]
        return True

    def _adopt(self, name: str) -> dict | None:
        """A stage of a run made before run.json, recorded now if its output loads; else None (it is redone)."""
        old = self.record.legacy
        if old is None or name not in old:
            return None
        problem = _load_problem(self.path(name))
        if problem is not None:
            print(f"[{name}] {problem}")
            return None
        timings = {key: old[key][name] for key in ("wall_seconds", "peak_rss_mb") if name in old.get(key, {})}
        return self.record.finish(name, [self.path(name)], metrics=old[name], **timings)


# ------------------------------------------------------------------------------------------------------------
# The stages: stage_<name>(run) -> metrics, in the order they run


def stage_pretrain(run: Run) -> dict:
    """Train the tokenizer and pre-train a GPT on the world's corpus (the L1 objective)."""
    return pretrain_model(run.path("pretrained"), run.cfg, run.seed_for("pretrained"), run.world,
                          progress=run.progress)


def stage_sft(run: Run) -> dict:
    """Step 1: fine-tune on the demonstrations; select the epoch by mean gold score on validation prompts.

    The paper selects by RM score on a validation set (an RM from an earlier round of data collection). Our first
    round has no RM yet, so the labelers themselves (the gold labeler) score validation samples; validation loss
    is recorded beside it to show the paper's observation that it overfits while the score keeps improving.
    """
    cfg, world, tokenizer, seed = run.cfg, run.world, run.tokenizer, run.seed_for("sft")
    model = copy.deepcopy(run.model("pretrained"))
    demos = [(d.prompt, d.response) for d in world.demonstrations()]   # Prompts: multi-turn ones keep their history
    val_prompts = world.prompts("val")
    val_demos = [(p, world.ideal_response(p)) for p in val_prompts]

    def gold_on_val(m: GPT) -> float:
        samples = ev.sample_answers(m, tokenizer, world, val_prompts, cfg.eval_temperature, cfg.max_new_tokens, seed)
        return ev.summarize(samples)["gold"]

    sft_cfg = replace(cfg.sft, seed=seed)
    model, history = train_sft(model, (demos, val_demos), sft_cfg, tokenizer=tokenizer, eval_fn=gold_on_val,
                               progress=run.progress)
    best = history["selected"].index(True)
    metrics = {"best_epoch": history["epoch"][best], "val_loss": history["val_loss"][best],
               "val_gold": history["score"][best], "demonstrations": len(demos)}
    save_checkpoint(run.path("sft"), model, tokenizer, stage="sft",
                    metadata={"seed": seed, "config": asdict(sft_cfg), "metrics": metrics, "history": history})
    return metrics


def collect_comparisons(run: Run, name: str, policies: tuple, passes: int, with_val: bool = False) -> dict:
    """Sample K answers per train prompt (`passes` times each) from the round's policies at several temperatures,
    rank them with the noisy labeler, and save them; round 1 also makes the validation comparisons."""
    cfg, seed = run.cfg.comparisons, run.seed_for(name)
    models = {p: run.model(p) for p in policies}

    def sample(prompts: list, seed: int, cut_copies: int = 0) -> list:
        return sample_comparisons(prompts, models, run.tokenizer, run.world, k=cfg.k, temperatures=cfg.temperatures,
                                  seed=seed, max_new_tokens=run.cfg.max_new_tokens, cut_copies=cut_copies)

    metrics = {}
    if with_val:   # written first: the round's own file marks the stage done
        val = sample(run.world.prompts("val"), seed + 500)   # sampled answers only: the ceiling is theirs
        save_comparisons(run.folder / "comparisons_val.jsonl", val)
        metrics["val_comparisons"] = len(val)
    train = sample(run.world.prompts("train") * passes, seed, cfg.cut_copies)
    save_comparisons(run.path(name), train)
    return {**metrics, "comparisons": len(train), "policies": list(policies),
            "fact_contrast": fact_contrast_share(train, run.world)}


def stage_comparisons_round1(run: Run) -> dict:
    c = run.cfg.comparisons
    return collect_comparisons(run, "comparisons_round1", c.round1_policies, c.round1_passes, with_val=True)


def train_rm(run: Run, name: str, rounds: tuple, epochs: int | None = None, members: int = 1) -> dict:
    """Step 2: the SFT model, unembedding removed, plus a scalar head, trained on all C(K,2) pairs per prompt
    (members > 1: that many such RMs, differing in their head's random draw, averaged: ensemble.py)."""
    seed, tokenizer = run.seed_for(name), run.tokenizer
    cfg = replace(run.cfg.reward, seed=seed, epochs=epochs or run.cfg.reward.epochs)
    train = [c for r in rounds for c in load_comparisons(run.path(r))]
    val = load_comparisons(run.folder / "comparisons_val.jsonl")
    flags = tuple(FLAGS) if cfg.flag_coef else ()   # a flag head only where the labeler's flags are trained on
    if members == 1:
        rm = RewardModel.from_gpt(run.model("sft"), readout=run.cfg.reward_readout, flags=flags,
                                  surprise=run.cfg.reward_surprise)
        rm, history = train_reward_model(rm, (train, val), cfg, tokenizer=tokenizer, progress=run.progress)
    else:
        rm, histories = train_reward_ensemble(run.model("sft"), (train, val), cfg, members, tokenizer=tokenizer,
                                              progress=run.progress, readout=run.cfg.reward_readout, flags=flags,
                                              surprise=run.cfg.reward_surprise)
        history = {**histories[0], "members": histories}   # plots read member 0's curves
    normalize_reward(rm, run.world.demonstrations(), tokenizer)   # the demonstrations' mean reward is 0
    accuracy = pairwise_accuracy(rm, val, tokenizer)
    probes = probe_accuracy(rm, tokenizer, probe_pairs(run.world, run.world.prompts("test")))
    metrics = {"val_accuracy": accuracy["accuracy"], "val_gold_accuracy": accuracy["gold_accuracy"],
               "ceiling": ceiling_of(val), "probes": probes, "train_comparisons": len(train), "rounds": list(rounds)}
    save_checkpoint(run.path(name), rm, tokenizer, stage=name, metadata={"seed": seed, "metrics": metrics,
                                                                          "history": history})
    return metrics


def stage_rm_round1(run: Run) -> dict:
    return train_rm(run, "rm_round1", ("comparisons_round1",), run.cfg.round1_reward_epochs)


def train_policy(run: Run, name: str, reward_model: str, ppo_cfg: PPOConfig) -> tuple[GPT, dict]:
    """Step 3: PPO from SFT against a reward model, with a per-token KL penalty to SFT (+ ptx when γ_ptx > 0).
    Logs the gold score of every rollout (never trained on). Returns (policy, history); saves nothing."""
    sft, rm = run.model("sft"), run.model(reward_model)
    policy = copy.deepcopy(sft).requires_grad_(True)        # sft may be frozen: an earlier run's reference
    value_model = copy.deepcopy(single_reward_model(rm)).requires_grad_(True)   # V starts as the (first) RM
    prompts = run.world.prompts("train")
    return train_ppo(policy, [encode_chat_prompt(run.tokenizer, p) for p in prompts],
                     replace(ppo_cfg, seed=run.seed_for(name)), reference=sft, reward_model=rm,
                     value_model=value_model, tokenizer=run.tokenizer,
                     pretrain_ids=run.streams[0] if ppo_cfg.ptx_coef > 0 else None,
                     eval_fn=ev.rollout_gold(run.world, prompts, run.tokenizer), progress=run.progress)


def ppo_stage(run: Run, name: str, reward_model: str, ppo_cfg: PPOConfig) -> dict:
    """train_policy, then save the policy with its history; metrics: the first and last iteration's statistics."""
    policy, history = train_policy(run, name, reward_model, ppo_cfg)
    metrics = {"reward_model": reward_model, "iterations": ppo_cfg.iterations, "ptx_coef": ppo_cfg.ptx_coef,
               **{f"{key}_start": history[key][0] for key in ("rm_reward", "gold")},
               **{key: history[key][-1] for key in ("rm_reward", "gold", "kl", "kl_k3", "beta", "response_length")}}
    save_checkpoint(run.path(name), policy, run.tokenizer, stage=name,
                    metadata={"seed": run.seed_for(name), "config": asdict(replace(ppo_cfg, seed=run.seed_for(name))),
                              "metrics": metrics, "history": history})
    return metrics


def stage_ppo_round1(run: Run) -> dict:
    return ppo_stage(run, "ppo_round1", "rm_round1", replace(run.cfg.ppo, iterations=run.cfg.round1_ppo_iterations))


def stage_comparisons_round2(run: Run) -> dict:
    c = run.cfg.comparisons
    return collect_comparisons(run, "comparisons_round2", c.round2_policies, c.round2_passes)


def stage_rm(run: Run) -> dict:
    return train_rm(run, "rm", ("comparisons_round1", "comparisons_round2"), members=run.cfg.reward_members)


def stage_ppo(run: Run) -> dict:
    return ppo_stage(run, "ppo", "rm", run.cfg.ppo)


def stage_ppo_ptx(run: Run) -> dict:
    return ppo_stage(run, "ppo_ptx", "rm", replace(run.cfg.ppo, ptx_coef=run.cfg.ptx_coef))


def stage_evaluation(run: Run) -> dict:
    """Every policy on the held-out test prompts: gold, win rate vs SFT, KL, RM reward, tax, follow-ups."""
    policies = {name: run.model(name) for name in ("pretrained", "sft", "ppo", "ppo_ptx")}
    evaluation = ev.evaluate_policies(policies, run.model("rm"), run.tokenizer, run.world, run.streams[1],
                                      run.cfg.eval_temperature, run.cfg.max_new_tokens, run.seed_for("evaluation"),
                                      run.cfg.eval_samples)
    write_json_atomic(run.path("evaluation"), evaluation)
    return {key: value for key, value in evaluation.items() if key != "examples"}


def stage_overoptimisation(run: Run) -> dict:
    """Gold against √KL as the policy is pushed towards RM-1's and the main RM's favourites (Gao et al. 2022).

    Best-of-n: N answers per val prompt sampled ONCE from SFT, scored by both RMs and the gold labeler; every
    n ≤ N by averaging over subsets. RL: PPO at β = 0 from SFT against RM-1 (and the main RM if configured), its
    rollouts' gold, RM reward and KL logged every iteration. Plus the main PPO's point from the evaluation.
    """
    cfg, world, tokenizer, seed = run.cfg, run.world, run.tokenizer, run.seed_for("overoptimisation")
    o, T, L = cfg.overoptimisation, cfg.eval_temperature, cfg.max_new_tokens
    prompts = world.prompts("val")[:o.prompts]
    samples = [ev.sample_answers(run.model("sft"), tokenizer, world, prompts, T, L, seed + j) for j in range(o.samples)]
    gold = [s.gold_totals for s in samples]                                                          # (N, B)
    ns = [2 ** i for i in range(o.samples.bit_length()) if 2 ** i <= o.samples]
    rms = ("rm_round1", "rm")
    best_of_n = {rm: best_of_n_curve([score_responses(run.model(rm), tokenizer, prompts, s.texts, s.ended).tolist()
                                      for s in samples], gold, ns) for rm in rms}
    sft_gold = best_of_n["rm"][0]["gold"]                    # n = 1: the SFT policy itself on these prompts
    train_prompts = world.prompts("train")                   # RL's rollouts answer these: its own baseline
    sft_train_gold = ev.summarize(ev.sample_answers(run.model("sft"), tokenizer, world, train_prompts, T, L, seed))["gold"]
    rl = {}
    for rm in o.reward_models:   # β = 0 from SFT: nothing holds the policy near SFT but the learning rate
        _, history = train_policy(run, "overoptimisation", rm,
                                  replace(cfg.ppo, init_kl_coef=0.0, adaptive_kl=False, iterations=o.rl_iterations))
        rl[rm] = {key: history[key] for key in ("kl", "gold", "rm_reward")}
    ppo = run.metrics["evaluation"]["policies"]
    result = {"seed": seed, "prompts": len(prompts), "samples": o.samples, "sft_gold": sft_gold,
              "sft_train_gold": sft_train_gold, "best_of_n": best_of_n, "rl": rl,
              "ppo": {"reward_model": "rm", "beta": cfg.ppo.init_kl_coef, "kl": ppo["ppo"]["kl_to_sft"],
                      "gain": ppo["ppo"]["gold"] - ppo["sft"]["gold"]},
              "fits": gao_fits(best_of_n, sft_gold, rl, sft_train_gold),
              "points": beta_points(run, rl.get("rm_round1"))}
    write_json_atomic(run.path("overoptimisation"), result)
    return {key: value for key, value in result.items() if key not in ("rl", "points")}


def gao_fits(best_of_n: dict, sft_gold: float, rl: dict, sft_train_gold: float) -> dict:
    """Gao et al.'s (α, β) per reward model: best-of-n gold(d) = d(α − βd), RL gold(d) = d(α − β log d), d = √KL,
    gold relative to the SFT policy's on the same prompts (val prompts for best-of-n, train prompts for RL)."""
    fits = {"best_of_n": {}, "rl": {}}
    for rm, curve in best_of_n.items():
        alpha, beta = fit_best_of_n([c["kl"] ** 0.5 for c in curve], [c["gold"] - sft_gold for c in curve])
        fits["best_of_n"][rm] = {"alpha": alpha, "beta": beta}
    for rm, h in rl.items():   # k1 estimates of KL can dip below 0 near SFT: d = √max(KL, 0)
        alpha, beta = fit_rl([max(kl, 0.0) ** 0.5 for kl in h["kl"]], [g - sft_train_gold for g in h["gold"]])
        fits["rl"][rm] = {"alpha": alpha, "beta": beta}
    return fits


def beta_points(run: Run, beta0: dict | None, window: int = 5) -> list[dict]:
    """Two points of the reward–KL frontier against RM-1 after the same number of iterations: PPO-1 (β of cfg.ppo)
    and the β = 0 run; each the mean of the rollouts' statistics over the last `window` iterations."""
    if beta0 is None:
        return []
    ppo1 = read_metadata(run.path("ppo_round1"))["history"]
    n = len(ppo1["kl"])

    def point(beta: float, h: dict) -> dict:
        last = slice(max(0, n - window), n)
        return {"beta": beta, "iterations": n, "reward_model": "rm_round1",
                **{key: sum(h[key][last]) / len(h[key][last]) for key in ("kl", "rm_reward", "gold")}}
    return [point(run.cfg.ppo.init_kl_coef, ppo1), point(0.0, beta0)]


# ------------------------------------------------------------------------------------------------------------
# The road


STAGES = (   # (name, output in the run folder, stage function), in the order they run
    ("pretrained", "pretrained", stage_pretrain),
    ("sft", "sft", stage_sft),
    ("comparisons_round1", "comparisons_round1.jsonl", stage_comparisons_round1),
    ("rm_round1", "rm_round1", stage_rm_round1),
    ("ppo_round1", "ppo_round1", stage_ppo_round1),
    ("comparisons_round2", "comparisons_round2.jsonl", stage_comparisons_round2),
    ("rm", "rm", stage_rm),
    ("ppo", "ppo", stage_ppo),
    ("ppo_ptx", "ppo_ptx", stage_ppo_ptx),
    ("evaluation", "evaluation.json", stage_evaluation),
    ("overoptimisation", "overoptimisation.json", stage_overoptimisation),
)
OUTPUTS = {name: output for name, output, _ in STAGES}


def run_config(cfg: PipelineConfig, world: World, pretrained: Path | None) -> dict:
    """Everything that decides a run's numbers besides its seed, as JSON values: run.json keeps it, and --resume
    refuses to continue a run under another one."""
    config = {"pipeline": asdict(cfg), "world": asdict(world.config), "pretrained": pretrained}
    return json.loads(json.dumps(config, default=str))


def run_pipeline(folder: str | Path, preset: str | PipelineConfig = "course", seed: int = 0, resume: bool = False,
                 pretrained: str | Path | None = None, progress: bool = True, *, force: bool = False,
                 world: WorldConfig | None = None) -> dict:
    """Run every stage into `folder`; returns the metrics also written to folder/metrics.json (and report.md).

    The folder is the run's own (runfolder.py): new, empty, or a run folder of this pipeline, which resume=True
    continues if preset, seed and config match, redoing a stage whose files fail their checksums (and every stage
    after it). force=True runs beside someone else's files (never replacing one), starts an existing run over, or
    resumes across a config change. world: the toy world (default WorldConfig(), the course's).
    """
    from minirlhf.report import claim_values, write_report

    cfg = preset if isinstance(preset, PipelineConfig) else pipeline_config(preset)
    run = Run(Path(folder), cfg, seed, pretrained, progress, world)   # checks seed and --pretrained: nothing written
    with RunFolder.open(run.folder, kind="run", identity={"preset": cfg.name, "seed": seed},
                        config=run_config(cfg, run.world, run.given.get("pretrained")), resume=resume, force=force,
                        reserved=(*OUTPUTS.values(), *RUN_FILES)) as record:
        run.record = record
        run.metrics.update({"preset": cfg.name, "seed": seed, "device": str(run.device)})
        for name, _, stage in STAGES:
            run.stage(name, stage, resume)
        run.metrics["threads"] = run_threads(run.metrics)   # same seed, machine and threads: same numbers
        run.metrics["claims"] = claim_values(run.metrics)
        write_json_atomic(run.folder / "metrics.json", run.metrics)
        write_report(run.folder, run.metrics)
        record.mark_finished()
    return run.metrics


def run_threads(metrics: dict) -> int | str:
    """The torch threads the run's stages ran with (its wall time depends on them): one number, or "1–2" when a
    resumed run's stages ran with different counts. Stages recorded before threads were kept: this process's."""
    counts = sorted(set(metrics.get("stage_threads", {}).values())) or [torch.get_num_threads()]
    return counts[0] if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def run_seeds(folder: str | Path, preset: str | PipelineConfig = "course", seeds: tuple = (0, 1, 2),
              resume: bool = False, pretrained: str | Path | None = None, progress: bool = True, *,
              force: bool = False, world: WorldConfig | None = None) -> dict:
    """run_pipeline for each seed into folder/seed-S, then the claims' mean and spread over the seeds in
    folder/metrics.json and folder/report.md. The folder is the runs' own, as in run_pipeline (kind "seeds")."""
    from minirlhf.report import aggregate, write_seeds_report

    folder = Path(folder)
    cfg = preset if isinstance(preset, PipelineConfig) else pipeline_config(preset)
    given = _given_checkpoint("pretrained", pretrained) if pretrained is not None else None
    with RunFolder.open(folder, kind="seeds", identity={"preset": cfg.name},
                        config=run_config(cfg, World(world or WorldConfig()), given), resume=resume, force=force,
                        reserved=("metrics.json", "report.md")) as record:
        per_seed = {seed: run_pipeline(folder / f"seed-{seed}", cfg, seed, resume, pretrained, progress,
                                       force=force, world=world) for seed in seeds}
        metrics = aggregate(per_seed)
        write_json_atomic(folder / "metrics.json", metrics)
        write_seeds_report(folder, metrics)
        record.mark_finished()
    return metrics
