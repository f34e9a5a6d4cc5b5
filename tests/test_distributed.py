"""torchrun data parallelism on CPU (gloo): two processes train like one, only rank 0 writes, a failure stops the job.

The multi-process tests start `torchrun --standalone --nproc_per_node 2` on this very file (see the bottom: run as a
script it is the worker). Each process has one thread (OMP_NUM_THREADS=1), as on the CI machine's two cores.
Tolerance: two processes compute each step's gradient in two pieces and all-reduce them, so float32 sums are
added in another order; the logged losses agree with one process's to 1e-5 nats and the weights to 1e-4.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minirlhf import distributed
from minirlhf.model import GPT, get_config, pick_device

HERE = Path(__file__).resolve()
TOLERANCE = 1e-5   # nats: one process's loss curve vs two processes'


# ---- one process: nothing is joined, every helper is the identity -----------------------------------------------


def test_shard_bounds_split_a_batch_into_disjoint_balanced_parts():
    assert [distributed.shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [distributed.shard_bounds(1, r, 2) for r in range(2)] == [(0, 0), (0, 1)]   # one row: rank 0 has none
    for n in range(0, 12):
        for world in range(1, 5):
            rows = [i for r in range(world) for i in range(*distributed.shard_bounds(n, r, world))]
            assert rows == list(range(n))                                   # disjoint, in order, all of them
            sizes = [b - a for a, b in (distributed.shard_bounds(n, r, world) for r in range(world))]
            assert max(sizes) - min(sizes) <= 1


def test_a_plain_run_joins_nothing_and_changes_nothing(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", distributed.DEVICE_ENV):
        monkeypatch.delenv(name, raising=False)
    model = GPT(get_config("tiny"))
    loss = torch.tensor(2.5)
    with distributed.process_group():
        assert not distributed.is_distributed() and distributed.is_main()
        assert (distributed.rank(), distributed.world_size()) == (0, 1)
        batch = [1, 2, 3]
        assert distributed.shard(batch) is batch
        assert distributed.scale_for_mean(loss, 1, 3) is loss               # no scaling: the same tensor
        assert distributed.all_reduce_mean(loss) is loss
        assert distributed.broadcast_object({"a": 1}) == {"a": 1}
        assert distributed.wrap(model) is model


def test_device_flag_becomes_every_stages_device(monkeypatch):
    monkeypatch.setenv(distributed.DEVICE_ENV, "")     # (so that monkeypatch restores it after setup sets it)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup("cpu") == torch.device("cpu")
    assert os.environ[distributed.DEVICE_ENV] == "cpu" and pick_device() == torch.device("cpu")


def test_a_bad_timeout_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="MINIRLHF_DIST_TIMEOUT='soon'.*positive number of seconds"):
        distributed.timeout_seconds()


# ---- the same tiny stages in one process and in two ---------------------------------------------------------------


SENTENCES = ["bobo likes red .", "kiki eats plums .", "mila lives in a cave .", "what colour does bobo like ?",
             "name two foods .", "red and blue .", "tell me about kiki .", "kiki likes green . kiki lives in a barn .",
             "ugh , stupid question .", "game : bobo -> red ; kiki -> blue ;"] * 20


def train_tiny_stages() -> tuple[dict, dict]:
    """Pre-training, SFT and the reward model on the tiny preset; batches chosen so that some shares are uneven
    or empty (14 and 7 windows, 21 demonstrations in 4s, 13 comparisons in 4s). Returns (histories, weights)."""
    from minirlhf.comparisons import Comparison
    from minirlhf.pretrain import PretrainConfig, probe_batch, split_stream, token_stream, train_pretrain
    from minirlhf.reward import RewardConfig, RewardModel, train_reward_model
    from minirlhf.sft import SFTConfig, train_sft
    from minirlhf.tokenizer import train_tokenizer

    tok = train_tokenizer(SENTENCES, vocab_size=300)
    histories, weights = {}, {}
    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=len(tok)))
    train, val = split_stream(token_stream(tok, SENTENCES), 0.1)
    cfg = PretrainConfig(steps=12, tokens_per_step=224, curriculum=((0, 16), (6, 32)), warmup_steps=3,
                         eval_every=4, eval_batches=2, probe_every=4)
    probe = probe_batch(tok, [[("bobo likes", False), (" red", True)]], 64)
    model, histories["pretrain"] = train_pretrain(model, (train, val, probe), cfg, progress=False)
    weights["pretrain"] = {k: v.detach().clone() for k, v in model.state_dict().items()}   # a copy: trained on

    demos = [("what colour does bobo like ?", "bobo likes red ."), ("name two foods .", "plums and fish ."),
             ("tell me about kiki .", "kiki eats plums . kiki likes green .")] * 7
    model, histories["sft"] = train_sft(model, (demos, demos[:3]), SFTConfig(epochs=2, batch_size=4, lr=1e-3,
                                                                              dropout=0.0),   # dropout: see docs
                                        tokenizer=tok, progress=False)
    weights["sft"] = {k: v.detach().clone() for k, v in model.state_dict().items()}   # a copy: trained on

    rng, comparisons = random.Random(0), []
    for i in range(13):
        order = list(range(4))
        rng.shuffle(order)
        comparisons.append(Comparison(prompt={"id": i, "text": "what colour does bobo like ?"},
                                      responses=["bobo likes red .", "red", "ugh , stupid question .", "kiki eats ."],
                                      ended=[True, False, True, True], ranking=order, gold=[1.0, 0.5, 0.0, 0.2]))
    rm = RewardModel.from_gpt(model)
    rm, histories["rm"] = train_reward_model(rm, (comparisons, comparisons[:4]),
                                             RewardConfig(epochs=2, batch_prompts=4, eval_every=2),
                                             tokenizer=tok, progress=False)
    weights["rm"] = {k: v.detach().clone() for k, v in rm.state_dict().items()}   # a copy: trained on
    for h in histories.values():
        for key in ("seconds", "tokens_per_s"):
            h.pop(key, None)
    return histories, {f"{stage}.{k}": v for stage, w in weights.items() for k, v in w.items()}


def torchrun(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ARGS`, one thread per process; its output, whatever the exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent.parent)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The tiny stages and the write checks on two gloo processes; each writes rank-R.json and its weights."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(HERE), "train", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_two_gloo_processes_give_one_processs_loss_curves(two_processes):
    torch.manual_seed(0)
    one, one_weights = train_tiny_stages()
    results = [json.loads((two_processes / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["histories"] == results[1]["histories"]               # every process returns rank 0's history
    two = results[0]["histories"]
    curves = {"pretrain": ("train_loss", "val_loss", "probe_loss"), "sft": ("train_loss", "val_loss"),
              "rm": ("loss", "accuracy", "val_accuracy")}
    for stage, keys in curves.items():
        for key in keys:
            assert len(two[stage][key]) == len(one[stage][key]) > 0, (stage, key)
            gap = max(abs(a - b) for a, b in zip(one[stage][key], two[stage][key]))
            assert gap <= TOLERANCE, f"{stage} {key}: two processes differ from one by {gap:.2e}"
    assert two["sft"]["selected"] == one["sft"]["selected"]
    assert two["pretrain"]["train_loss"][-1] < two["pretrain"]["train_loss"][0] - 0.5   # and it did learn
    w0, w1 = (load_file(two_processes / f"weights-{r}.safetensors") for r in (0, 1))
    for name, value in one_weights.items():
        assert torch.equal(w0[name], w1[name]), name                         # the processes never drift apart
        # A bias added to every reward alike gets a gradient of exactly 0 (it cancels in r_w − r_l): the head's bias
        # and the final LayerNorm's (r_θ = w·(LN(x) + β) + b reads β only through the constant w·β). Adam scales
        # their rounding noise up to ±lr steps, in either run, so their values differ from machine to machine.
        if name not in ("rm.head.bias", "rm.trunk.transformer.ln_f.bias"):
            assert torch.allclose(w0[name], value, atol=1e-4), name


def test_only_rank_0_writes_and_the_others_then_read_it(two_processes):
    files = sorted(p.name for p in two_processes.iterdir() if not p.name.startswith(("rank-", "weights-", "finished")))
    assert files == ["checkpoint-from-rank-0", "figure-from-rank-0.png", "text-from-rank-0.txt"]
    rank1 = json.loads((two_processes / "rank-1.json").read_text())
    assert rank1["saw"] == {"text": "written by rank 0", "checkpoint": True, "figure": True}


def test_torchrun_pretrain_command_trains_and_rank_0_alone_writes(tmp_path):
    """The command of docs/scaling.md, smoke-sized: the world, the tokenizer and the data on every process, the
    steps shared (that the curve equals one process's is shown above, stage by stage)."""
    args = ["pretrain", "--preset", "smoke", "--steps", "10", "--no-icl", "--device", "cpu", "--out"]
    done = torchrun("-m", "minirlhf", *args, str(tmp_path / "two"), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pre-trained checkpoint written") == 1       # rank 0 alone prints
    assert [p.name for p in tmp_path.iterdir()] == ["two"]                 # one checkpoint, no temp folders left
    history = json.loads((tmp_path / "two" / "metadata.json").read_text())["history"]
    assert len(history["train_loss"]) == 10 and history["train_loss"][-1] < history["train_loss"][0] - 0.1


# ---- a failing rank stops the job --------------------------------------------------------------------------------


@pytest.mark.parametrize("failure, message", [
    ("raise", "rank 1 of 2 stopped: ValueError: rank 1 cannot go on"),   # an error in one process
    ("stall", "rank 0 of 2 stopped"),                                    # one process hangs: the other times out
])
def test_a_failing_rank_stops_the_job_with_a_clear_message(tmp_path, failure, message):
    start = time.perf_counter()
    done = torchrun(str(HERE), failure, str(tmp_path), env={distributed.TIMEOUT_ENV: "3"}, timeout=90)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-3000:]
    assert time.perf_counter() - start < 60                                # not the stalled rank's 600 s
    assert not (tmp_path / "finished").exists()


# ---- on a GPU (benchmarks/gpu_check.sh runs these; skipped on CPU) -----------------------------------------------


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_gpu_pretraining_in_bf16_follows_fp32_on_cpu():
    from minirlhf.pretrain import PretrainConfig, train_pretrain

    stream = torch.arange(20_000) % 16                                    # 0 1 2 ... 15 0 1 ...: learnable
    cfg = PretrainConfig(steps=30, tokens_per_step=1024, curriculum=(), warmup_steps=5, eval_every=10)
    curves = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = GPT(get_config("tiny", vocab_size=64)).to(device)
        _, history = train_pretrain(model, (stream, stream[:2000]), cfg, progress=False)
        curves[device] = history["train_loss"]
    assert curves["cuda"][-1] < curves["cuda"][0] - 1.5                      # it learns on the GPU (CPU: 4.16 -> 2.07)
    assert abs(curves["cpu"][0] - curves["cuda"][0]) < 0.02                  # the same model, rounded to bf16
    assert abs(curves["cpu"][-1] - curves["cuda"][-1]) < 0.15                # and the same training, give or take


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_gpu_two_nccl_processes_train(tmp_path):
    args = ["pretrain", "--preset", "smoke", "--steps", "20", "--no-icl", "--device", "cuda"]
    done = torchrun("-m", "minirlhf", *args, "--out", str(tmp_path / "two"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "two" / "metadata.json").read_text())["history"]
    assert history["train_loss"][-1] < history["train_loss"][0]


# ---- PPO across processes: each samples its share of the prompts, statistics and gradients are the batch's -------


class CountReward(torch.nn.Module):
    """A learnable stub r_θ: a quarter point per token of the sequence among 30 fixed token ids (as in test_ppo)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.register_buffer("rewarded", torch.zeros(vocab_size, dtype=torch.bool))
        self.rewarded[100:130] = True

    def forward(self, idx, attention_mask=None):   # (B, T) -> (B,)
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask
        return (self.rewarded[idx].float() * mask).sum(1) / 4


def tiny_ppo_setup():
    """(tokenizer, prompts, policy, reference, reward model, value model, config, a (16, 8) tensor and its mask)."""
    from minirlhf.ppo import PPOConfig
    from minirlhf.reward import RewardModel
    from minirlhf.tokenizer import encode_chat_prompt, train_tokenizer

    tok = train_tokenizer(SENTENCES, vocab_size=300)
    prompts = [encode_chat_prompt(tok, t) for t in SENTENCES[:10]]
    torch.manual_seed(0)
    policy = GPT(get_config("tiny", vocab_size=len(tok)))
    reference, value = GPT(get_config("tiny", vocab_size=len(tok))), RewardModel.from_gpt(policy)
    reference.load_state_dict(policy.state_dict())
    cfg = PPOConfig(iterations=25, batch_size=16, minibatches=2, max_new_tokens=8, lr=1e-3, init_kl_coef=0.01,
                    adaptive_kl=True, target_kl=1.0, missing_eos_penalty=None, seed=0)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    mask = (torch.rand(16, 8, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    return tok, prompts, policy, reference, CountReward(len(tok)), value, cfg, x, mask


def ppo_across_processes() -> dict:
    """What each process records of a PPO run and of its pieces (the worker's "ppo" mode)."""
    from minirlhf import ppo

    tok, prompts, policy, reference, rm, value, cfg, x, mask = tiny_ppo_setup()
    first = ppo.rollout(policy, prompts, cfg, tok, torch.Generator().manual_seed(0),
                        torch.Generator().manual_seed(0))
    mine = distributed.shard(torch.arange(16))
    whitened = ppo.whiten(x[mine], mask[mine])
    policy, history = ppo.train_ppo(policy.requires_grad_(True), prompts, cfg, reference=reference, reward_model=rm,
                                    value_model=value.requires_grad_(True), tokenizer=tok, progress=False)
    for key in [k for k in history if k.startswith("time_")]:
        history.pop(key)
    return {"prompt_index": first.prompt_index, "whitened": whitened.tolist(), "history": history,
            "weights": {k: v.detach().clone() for k, v in policy.state_dict().items()}}


@pytest.fixture(scope="module")
def two_process_ppo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo")
    done = torchrun(str(HERE), "ppo", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"ppo-{r}.json").read_text()) for r in (0, 1)], \
        [load_file(out / f"ppo-weights-{r}.safetensors") for r in (0, 1)]


def test_ppo_across_two_processes_samples_shares_and_whitens_globally(two_process_ppo):
    from minirlhf import ppo

    (rank0, rank1), _ = two_process_ppo
    tok, prompts, policy, _, _, _, cfg, x, mask = tiny_ppo_setup()
    one = ppo.rollout(policy, prompts, cfg, tok, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert rank0["prompt_index"] + rank1["prompt_index"] == one.prompt_index   # the same B prompts, split in two
    assert len(rank0["prompt_index"]) == len(rank1["prompt_index"]) == 8
    both = torch.tensor(rank0["whitened"] + rank1["whitened"])
    assert torch.allclose(both, ppo.whiten(x, mask), atol=1e-6)               # the whole batch's mean and std


def test_ppo_across_two_processes_stays_in_step_and_learns(two_process_ppo):
    (rank0, rank1), (w0, w1) = two_process_ppo
    assert rank0["history"] == rank1["history"]                  # one history: the batch's statistics, one β
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name             # averaged gradients: the weights never drift apart
    h = rank0["history"]
    # it learns (one process, seeds 0-3: +0.35..+0.57; two processes: +0.21..+0.61, seed 0 the slowest)
    assert sum(h["rm_reward"][-5:]) / 5 > sum(h["rm_reward"][:5]) / 5 + 0.15, h["rm_reward"]
    assert len(set(h["beta"])) > 1                               # the adaptive controller moved, on the global KL
    assert max(h["logprob_gap"]) < 1e-4


def test_ppo_refuses_a_batch_the_processes_cannot_share_equally(monkeypatch):
    from minirlhf import ppo

    tok, prompts, policy, reference, rm, value, cfg, _, _ = tiny_ppo_setup()
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="batch_size = 16 must be a multiple of 6"):
        ppo.train_ppo(policy.requires_grad_(True), prompts, cfg, reference=reference, reward_model=rm,
                      value_model=value.requires_grad_(True), tokenizer=tok, progress=False)


# ---- the worker: this file run by torchrun ------------------------------------------------------------------------


def _worker(mode: str, out: Path) -> None:
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic

    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        rank = distributed.rank()
        if mode == "train":
            histories, weights = train_tiny_stages()
            save_file(weights, out / f"weights-{rank}.safetensors")
            # every process writes; only rank 0's files may appear, and the others can read them at once
            write_text_atomic(out / f"text-from-rank-{rank}.txt", f"written by rank {rank}")
            from minirlhf.course.plots import save_figure
            from minirlhf.tokenizer import train_tokenizer
            save_checkpoint(out / f"checkpoint-from-rank-{rank}", GPT(get_config("tiny")),
                            train_tokenizer(SENTENCES, vocab_size=300))
            import matplotlib.pyplot as plt
            save_figure(plt.figure(), out / f"figure-from-rank-{rank}.png")
            saw = {"text": (out / "text-from-rank-0.txt").read_text(),
                   "checkpoint": load_checkpoint(out / "checkpoint-from-rank-0")[0] is not None,
                   "figure": (out / "figure-from-rank-0.png").exists()}
            (out / f"rank-{rank}.json").write_text(json.dumps({"histories": histories, "saw": saw}))
        elif mode == "ppo":
            result = ppo_across_processes()
            save_file(result.pop("weights"), out / f"ppo-weights-{rank}.safetensors")
            (out / f"ppo-{rank}.json").write_text(json.dumps(result))
        elif rank == 1 and mode == "raise":
            raise ValueError("rank 1 cannot go on")
        else:
            if rank == 1:   # mode "stall": rank 1 stops answering; rank 0 waits in its all-reduce, then times out
                time.sleep(600)
            distributed.all_reduce_mean(torch.ones(1))
            distributed.barrier()
    (out / "finished").write_text(str(rank))


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
    sys.exit(0)
