"""The whole road, stage by stage, into one run folder (`python -m minirlhf pipeline`).

    pretrained/  ->  sft/  ->  comparisons.jsonl  ->  rm/  ->  ppo/, ppo_ptx/  ->  metrics.json, report.md, *.png

Every stage reads the previous stage's checkpoint and writes its own, atomically; `--resume` skips a stage
whose output exists, so an interrupted run (Ctrl-C) keeps what it finished.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from minirlhf import evaluate as ev
from minirlhf.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from minirlhf.comparisons import ceiling_of, load_comparisons, sample_comparisons, save_comparisons
from minirlhf.model import GPT, get_config, pick_device
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.pretrain import (
    PretrainConfig,
    evaluate_loss,
    probe_batch,
    stage_tokens,
    token_stream,
    train_pretrain,
)
from minirlhf.reward import (
    RewardConfig,
    RewardModel,
    normalize_reward,
    pairwise_accuracy,
    score_responses,
    train_reward_model,
)
from minirlhf.sft import SFTConfig, train_sft
from minirlhf.tokenizer import encode_chat_prompt, train_tokenizer
from minirlhf.world import World, WorldConfig
from minirlhf.world.corpus import Corpus, CorpusMix, lookup_probe_rows, phases_for


@dataclass
class PipelineConfig:
    """Every stage's budget for one preset. Values measured on 2 CPU cores (see README's figures)."""
    preset: str = "course"              # model size preset (model.PRESETS)
    vocab_size: int = 1024              # BPE vocabulary
    block_size: int = 128               # context window: the longest prompt plus an answer must fit
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    corpus: CorpusMix = field(default_factory=CorpusMix)   # document kinds per phase of the curriculum
    val_documents: int = 2000           # held-out final-mix documents: validation loss and its entropy floor
    sft: SFTConfig = field(default_factory=SFTConfig)
    k: int = 6                          # responses ranked per prompt (InstructGPT: 4 to 9): C(6,2) = 15 pairs
    comparison_rounds: int = 2          # times each training prompt is sampled and ranked (toy scale: more data)
    comparison_temperatures: tuple = (0.7, 1.0, 1.3)   # sampled from several policies and temperatures
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(lr=3e-4))
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(iterations=60, lr=2e-5))
    ptx_coef: float = 1.0               # γ of PPO-ptx (the PPO run uses 0)
    sweep_betas: tuple = (0.0, 0.03, 0.3)   # β values of the reward–KL frontier (the main run has β = 0.1)
    sweep_iterations: int = 30          # PPO iterations per sweep point
    best_of_n: tuple = (1, 2, 4, 8, 16)
    max_new_tokens: int = 24            # answer length cap everywhere
    eval_temperature: float = 1.0       # answers are sampled (greedy decoding hides the differences)


def pipeline_config(preset: str) -> PipelineConfig:
    """The embedded defaults: `tiny` is a smoke run of about a minute, `course` the notebooks' run."""
    if preset == "tiny":
        return PipelineConfig(
            preset="tiny", vocab_size=512,
            pretrain=PretrainConfig(steps=150, tokens_per_step=2048, curriculum=((0, 32), (50, 64), (100, 128)),
                                    lr=3e-3, min_lr=3e-4, warmup_steps=20, eval_every=50, probe_every=25),
            sft=SFTConfig(epochs=3, lr=1e-3),
            reward=RewardConfig(epochs=1, lr=3e-4),
            k=4, comparison_rounds=1,
            ppo=PPOConfig(iterations=4, batch_size=16, max_new_tokens=16),
            sweep_betas=(0.0, 0.3), sweep_iterations=2, best_of_n=(1, 4), max_new_tokens=16,
        )
    if preset == "course":
        return PipelineConfig()
    raise ValueError(f"unknown preset {preset!r}; choose one of ['course', 'tiny']")


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
    """(train streams, one per curriculum stage; validation stream; lookup probe) and the validation documents.

    Stage i reads phase i of the corpus (world/corpus.py: phases_for), sized to the tokens it will read
    (stage_tokens), so pre-training sees every document once: a fresh, never-repeated stream.
    """
    needs = stage_tokens(pcfg, block_size)
    next_doc: dict[str, int] = {}
    streams = []
    for phase, need in zip(phases_for(len(needs)), needs):
        stream, next_doc[phase] = fresh_stream(corpus, tokenizer, phase, need, next_doc.get(phase, 0))
        streams.append(stream)
    val_docs = corpus.documents("val", n_val)
    val_ids = token_stream(tokenizer, [d.text for d in val_docs])
    probe = probe_batch(tokenizer, lookup_probe_rows(corpus.world), block_size)
    return (streams, val_ids, probe), val_docs


# ------------------------------------------------------------------------------------------------------------
# The stages. Each takes the run folder and what earlier stages produced, and returns its metrics.


def stage_pretrain(out: Path, preset: str = "course", seed: int = 0, steps: int | None = None,
                   max_seconds: float | None = None, icl: bool = True, world: World | None = None,
                   progress: bool = True, cfg: PipelineConfig | None = None) -> Path:
    """Train the tokenizer and pre-train a GPT on the world's corpus (the L1 objective); save to `out`."""
    cfg = cfg or pipeline_config(preset)
    torch.manual_seed(seed)
    world = world or World(WorldConfig())
    corpus = Corpus(world, cfg.corpus)
    sample = corpus.documents("final", world.config.n_documents)   # the tokenizer learns from a sample
    tokenizer = train_tokenizer([d.text for d in sample], vocab_size=cfg.vocab_size)
    pcfg = replace(cfg.pretrain, seed=seed, max_seconds=max_seconds, steps=steps or cfg.pretrain.steps)
    start = time.perf_counter()
    data, val_docs = pretraining_data(corpus, tokenizer, pcfg, cfg.block_size, cfg.val_documents)
    generate_seconds = time.perf_counter() - start
    model = GPT(get_config(cfg.preset, vocab_size=len(tokenizer), block_size=cfg.block_size)).to(pick_device())
    model, history = train_pretrain(model, data, pcfg, progress=progress)
    val_loss, floor = evaluate_loss(model, data[1]), corpus_entropy_floor(val_docs, tokenizer)
    metrics = {"val_loss": val_loss, "entropy_floor": floor, "val_over_floor": val_loss / floor,
               "train_tokens": sum(len(s) for s in data[0]), "parameters": model.num_parameters(),
               "seconds": history["seconds"][-1], "tokens_per_s": history["tokens_per_s"][-1],
               "generate_seconds": generate_seconds, "probe_loss": history["probe_loss"][-1]}
    if icl:
        from minirlhf.prompting import icl_curve, icl_task_curve, zero_shot_accuracy

        metrics["icl"] = icl_curve(model, tokenizer, world, n_episodes=100, seed=seed)
        metrics["icl_task"] = icl_task_curve(model, tokenizer, world, n_episodes=100, seed=seed)
        metrics["zero_shot"] = {kind: zero_shot_accuracy(model, tokenizer, world, kind, n_episodes=100, seed=seed)
                                for kind in ("colour", "food", "home")}
    save_checkpoint(out, model, tokenizer, stage="pretrained",
                    metadata={"seed": seed, "preset": cfg.preset, "config": asdict(pcfg), "metrics": metrics,
                              "history": history})
    return out


def stage_sft(run: Path, pretrained: GPT, tokenizer, world: World, cfg: PipelineConfig, seed: int,
              progress: bool = True) -> dict:
    """Step 1: fine-tune on the demonstrations; select the epoch by mean gold score on validation prompts.

    The paper selects by RM score on a validation set (an RM from an earlier round of data collection). Our first
    round has no RM yet, so the labelers themselves (the gold labeler) score validation samples; validation loss
    is recorded beside it to show the paper's observation that it overfits while the score keeps improving.
    """
    model = copy.deepcopy(pretrained)
    demos = [(d.prompt, d.response) for d in world.demonstrations()]   # Prompts: multi-turn ones keep their history
    val_prompts = world.prompts("val")
    val_demos = [(p, world.ideal_response(p)) for p in val_prompts]

    def gold_on_val(m: GPT) -> float:
        samples = ev.sample_answers(m, tokenizer, world, val_prompts, cfg.eval_temperature, cfg.max_new_tokens, seed)
        return ev.summarize(samples)["gold"]

    sft_cfg = replace(cfg.sft, seed=seed)
    model, history = train_sft(model, (demos, val_demos), sft_cfg, tokenizer=tokenizer, eval_fn=gold_on_val,
                               progress=progress)
    best = history["selected"].index(True)
    metrics = {"best_epoch": history["epoch"][best], "val_loss": history["val_loss"][best],
               "val_gold": history["score"][best], "demonstrations": len(demos), "seconds": history["seconds"][-1]}
    save_checkpoint(run / "sft", model, tokenizer, stage="sft",
                    metadata={"seed": seed, "config": asdict(sft_cfg), "metrics": metrics, "history": history})
    return metrics


def stage_comparisons(run: Path, policies: dict, tokenizer, world: World, cfg: PipelineConfig, seed: int) -> dict:
    """Sample K answers per prompt from several policies and temperatures; rank them with the noisy labeler."""
    start = time.perf_counter()
    for split, rounds in (("train", cfg.comparison_rounds), ("val", 1)):
        comparisons = []
        for r in range(rounds):
            comparisons += sample_comparisons(world.prompts(split), policies, tokenizer, world, k=cfg.k,
                                              temperatures=cfg.comparison_temperatures,
                                              seed=seed + 1000 * r + (split == "val"), max_new_tokens=cfg.max_new_tokens)
        save_comparisons(run / f"comparisons_{split}.jsonl", comparisons)
    return {"seconds": time.perf_counter() - start}


def stage_reward(run: Path, sft: GPT, tokenizer, world: World, cfg: PipelineConfig, seed: int,
                 progress: bool = True) -> dict:
    """Step 2: the SFT model, unembedding removed, plus a scalar head, trained on all C(K,2) pairs per prompt."""
    from minirlhf.probes import probe_accuracy, probe_pairs

    torch.manual_seed(seed)
    start = time.perf_counter()
    train = load_comparisons(run / "comparisons_train.jsonl")
    val = load_comparisons(run / "comparisons_val.jsonl")
    rm = RewardModel.from_gpt(sft)
    rm, history = train_reward_model(rm, (train, val), replace(cfg.reward, seed=seed), tokenizer=tokenizer,
                                     progress=progress)
    normalize_reward(rm, world.demonstrations(), tokenizer)   # the demonstrations' mean reward is 0
    accuracy = pairwise_accuracy(rm, val, tokenizer)
    probes = probe_accuracy(rm, tokenizer, probe_pairs(world, world.prompts("test")))
    metrics = {"val_accuracy": accuracy["accuracy"], "val_gold_accuracy": accuracy["gold_accuracy"],
               "ceiling": ceiling_of(val), "probes": probes, "train_comparisons": len(train),
               "seconds": time.perf_counter() - start}
    save_checkpoint(run / "rm", rm, tokenizer, stage="rm", metadata={"seed": seed, "metrics": metrics, "history": history})
    return metrics


def stage_ppo(run: Path, name: str, sft: GPT, rm: RewardModel, tokenizer, world: World, ppo_cfg: PPOConfig,
              pretrain_ids: torch.Tensor | None, progress: bool = True) -> dict:
    """Step 3: PPO against the RM with a per-token KL penalty to the frozen SFT policy (+ ptx when γ_ptx > 0)."""
    policy, value_model = copy.deepcopy(sft), copy.deepcopy(rm)
    policy.requires_grad_(True)         # the frozen copies (train_ppo freezes the reference and the RM) are trainable
    value_model.requires_grad_(True)
    prompts = world.prompts("train")
    policy, history = train_ppo(policy, [encode_chat_prompt(tokenizer, p) for p in prompts], ppo_cfg,
                                reference=sft, reward_model=rm, value_model=value_model, tokenizer=tokenizer,
                                pretrain_ids=pretrain_ids if ppo_cfg.ptx_coef > 0 else None,
                                eval_fn=ev.rollout_gold(world, prompts, tokenizer), progress=progress)
    if name:
        save_checkpoint(run / name, policy, tokenizer, stage=name,
                        metadata={"seed": ppo_cfg.seed, "config": asdict(ppo_cfg), "history": history})
    return {"policy": policy, "history": history}


def evaluate_all(policies: dict, sft: GPT, rm: RewardModel, tokenizer, world: World, val_ids: torch.Tensor,
                 cfg: PipelineConfig, seed: int) -> dict:
    """Gold score and criteria, win rate vs SFT, KL to SFT, RM reward and pre-training loss on test prompts."""
    prompts = world.prompts("test")
    T, L = cfg.eval_temperature, cfg.max_new_tokens
    samples = {name: ev.sample_answers(m, tokenizer, world, prompts, T, L, seed) for name, m in policies.items()}
    results = {}
    for name, m in policies.items():
        s = samples[name]
        results[name] = {**ev.summarize(s),
                         "win_rate_vs_sft": ev.win_rate(s.gold_totals, samples["sft"].gold_totals),
                         "kl_to_sft": ev.kl_to_reference(m, sft, s, T),
                         "rm_reward": float(score_responses(rm, tokenizer, prompts, s.texts, s.ended).mean()),
                         "pretrain_val_loss": evaluate_loss(m, val_ids, max_batches=4)}
    bon = [ev.best_of_n(sft, rm, tokenizer, world, prompts, n, T, L, seed) for n in cfg.best_of_n]
    for b in bon:
        b["win_rate_vs_sft"] = ev.win_rate(b.pop("gold_totals"), samples["sft"].gold_totals)
    chat = {name: {f"follow_up_{k}_history": ev.follow_up_accuracy(m, tokenizer, world, prompts, k == "with",
                                                                     max_new_tokens=L, seed=seed)
                   for k in ("with", "without")} for name, m in policies.items()}
    return {"policies": results, "best_of_n": bon,
            "chat": {"policy": "ppo", **chat.get("ppo", {}), "by_policy": chat,
                     "follow_ups": sum(len(world.follow_ups(p)[1]) for p in prompts)},
            "examples": [{"prompt": p.text, **{name: samples[name].texts[i] for name in policies}}
                         for i, p in enumerate(prompts[:12])]}


def beta_sweep(sft: GPT, rm: RewardModel, tokenizer, world: World, cfg: PipelineConfig, seed: int) -> list[dict]:
    """The reward–KL frontier: short PPO runs at several β, each judged by the RM (proxy) and the gold labeler."""
    prompts = world.prompts("test")
    points = []
    for beta in cfg.sweep_betas:
        ppo_cfg = replace(cfg.ppo, init_kl_coef=beta, adaptive_kl=False, iterations=cfg.sweep_iterations, seed=seed)
        policy = stage_ppo(Path("."), "", sft, rm, tokenizer, world, ppo_cfg, None, progress=False)["policy"]
        s = ev.sample_answers(policy, tokenizer, world, prompts, cfg.eval_temperature, cfg.max_new_tokens, seed)
        points.append({"beta": beta, "kl": ev.kl_to_reference(policy, sft, s, cfg.eval_temperature),
                       "rm_reward": float(score_responses(rm, tokenizer, prompts, s.texts, s.ended).mean()),
                       "gold": ev.summarize(s)["gold"]})
    return points


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024   # macOS: bytes; Linux: KiB


def _done(path: Path) -> bool:
    return (path / "config.json").exists() if path.suffix == "" else path.exists()


def run_pipeline(run: Path, preset: str = "course", seed: int = 0, resume: bool = False,
                 pretrained: str | Path | None = None, progress: bool = True) -> dict:
    """Run every stage into the folder `run`; returns the metrics also written to run/metrics.json."""
    cfg = pipeline_config(preset)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    world = World(WorldConfig())
    device = pick_device()
    cfg.ppo = replace(cfg.ppo, seed=seed, max_new_tokens=cfg.max_new_tokens)
    metrics = json.loads((run / "metrics.json").read_text()) if resume and (run / "metrics.json").exists() else {}
    metrics.update({"preset": preset, "seed": seed, "device": str(device)})
    timing = metrics.setdefault("wall_seconds", {})
    rss = metrics.setdefault("peak_rss_mb", {})

    def stage(name: str, output: Path, fn) -> None:
        if resume and _done(output):
            print(f"[{name}] {output} exists: skipped (--resume)")
            return
        start = time.perf_counter()
        result = fn()
        if isinstance(result, dict):
            metrics[name] = result
        timing[name] = time.perf_counter() - start
        rss[name] = _peak_rss_mb()
        write_json_atomic(run / "metrics.json", metrics)   # a crash later keeps what finished

    # 0. pre-training (or a given pre-trained checkpoint)
    if pretrained is not None:
        pre_dir = Path(pretrained)
        if not (pre_dir / "config.json").exists():
            raise FileNotFoundError(f"no pre-trained checkpoint in {pre_dir} (expected {pre_dir}/config.json)")
    else:
        pre_dir = run / "pretrained"
        stage("pretrained", pre_dir, lambda: read_stage_metrics(
            stage_pretrain(pre_dir, preset, seed, world=world, progress=progress, cfg=cfg)))
    if "pretrained" not in metrics:   # made earlier (--resume, --pretrained): its metrics live in its metadata
        metrics["pretrained"] = read_stage_metrics(pre_dir)
        timing.setdefault("pretrained", metrics["pretrained"].get("seconds"))
    base, tokenizer, _ = load_checkpoint(pre_dir, device=device)
    train_ids, val_ids = pretrain_stream(world, tokenizer, cfg.val_documents)

    # 1. SFT on demonstrations
    stage("sft", run / "sft", lambda: stage_sft(run, base, tokenizer, world, cfg, seed, progress))
    sft, _, _ = load_checkpoint(run / "sft", tokenizer=tokenizer, device=device)

    # comparison data from several policies, ranked by the noisy labelers
    stage("comparisons", run / "comparisons_val.jsonl",
          lambda: stage_comparisons(run, {"pretrained": base, "sft": sft}, tokenizer, world, cfg, seed))

    # 2. reward model
    stage("rm", run / "rm", lambda: stage_reward(run, sft, tokenizer, world, cfg, seed, progress))
    rm, _, _ = load_checkpoint(run / "rm", tokenizer=tokenizer, device=device)

    # 3. PPO, then PPO-ptx
    stage("ppo", run / "ppo", lambda: ppo_summary(
        stage_ppo(run, "ppo", sft, rm, tokenizer, world, replace(cfg.ppo, ptx_coef=0.0), None, progress)))
    stage("ppo_ptx", run / "ppo_ptx", lambda: ppo_summary(
        stage_ppo(run, "ppo_ptx", sft, rm, tokenizer, world, replace(cfg.ppo, ptx_coef=cfg.ptx_coef), train_ids,
                  progress)))
    ppo, _, _ = load_checkpoint(run / "ppo", tokenizer=tokenizer, device=device)
    ppo_ptx, _, _ = load_checkpoint(run / "ppo_ptx", tokenizer=tokenizer, device=device)

    # evaluation on held-out prompts, and the β sweep
    policies = {"pretrained": base, "sft": sft, "ppo": ppo, "ppo_ptx": ppo_ptx}
    stage("evaluation", run / "evaluation.json", lambda: _save_json(
        run / "evaluation.json", evaluate_all(policies, sft, rm, tokenizer, world, val_ids, cfg, seed)))
    stage("beta_sweep", run / "beta_sweep.json", lambda: _save_json(
        run / "beta_sweep.json", {"points": beta_sweep(sft, rm, tokenizer, world, cfg, seed)}))
    evaluation = json.loads((run / "evaluation.json").read_text())
    metrics["summary"] = summary_table(metrics, evaluation)
    metrics["chat"] = {k: v for k, v in evaluation["chat"].items() if k != "by_policy"}   # uses its history?
    write_json_atomic(run / "metrics.json", metrics)
    from minirlhf.report import write_report

    write_report(run, metrics)
    return metrics


def read_stage_metrics(checkpoint: Path) -> dict:
    from minirlhf.checkpoint import read_metadata

    return read_metadata(checkpoint).get("metrics", {})


def ppo_summary(result: dict) -> dict:
    h = result["history"]
    return {key: h[key][-1] for key in ("rm_reward", "gold", "kl", "kl_k3", "beta", "response_length") if key in h} | {
        "iterations": len(h.get("rm_reward", [])), "start_gold": h.get("gold", [None])[0],
        "start_rm_reward": h.get("rm_reward", [None])[0]}


def _save_json(path: Path, data: dict) -> dict:
    write_json_atomic(path, data)
    return {k: v for k, v in data.items() if k != "examples"}


def summary_table(metrics: dict, evaluation: dict) -> dict:
    """Per policy: gold score, criteria, win rate vs SFT, KL to SFT, pre-training loss (the report card's rows)."""
    return {name: {k: row[k] for k in ("gold", *ev.CRITERIA, "win_rate_vs_sft", "kl_to_sft", "rm_reward",
                                       "pretrain_val_loss", "ended", "length")}
            for name, row in evaluation["policies"].items()}
