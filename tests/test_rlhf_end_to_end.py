"""End to end on the shipped course checkpoints: PPO raises the gold score, seeded runs repeat exactly."""

import copy

import pytest
import torch

from minirlhf.course.shipped import load_stage
from minirlhf.evaluate import rollout_gold
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.tokenizer import ASSISTANT, SPECIAL_IDS, encode_chat_prompt
from minirlhf.world import default_world
from minirlhf.world.gold import gold_score


class GoldReward(torch.nn.Module):
    """A reward model that *is* the gold labeler: decodes prompt and answer and scores them (for testing PPO)."""

    def __init__(self, tokenizer, world, prompts):
        super().__init__()
        self.tokenizer, self.world = tokenizer, world
        self.by_ids = {tuple(encode_chat_prompt(tokenizer, p)): p for p in prompts}   # multi-turn prompts too
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx, attention_mask=None):
        scores = []
        for row, mask in zip(idx.tolist(), attention_mask.tolist()):
            ids = [t for t, m in zip(row, mask) if m]
            cut = next(i for i, t in enumerate(ids)                           # the <|assistant|> that ends x
                       if t == SPECIAL_IDS[ASSISTANT] and tuple(ids[:i + 1]) in self.by_ids)
            answer = ids[cut + 1:]
            ended = bool(answer) and answer[-1] == self.tokenizer.eos_token_id
            text = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
            scores.append(gold_score(self.world, self.by_ids[tuple(ids[:cut + 1])], text, ended).total)
        return torch.tensor(scores, device=idx.device)


@pytest.fixture(scope="module")
def course():
    sft, tokenizer, _ = load_stage("sft")
    rm, _, _ = load_stage("rm", tokenizer=tokenizer)
    return sft, rm, tokenizer, default_world()


def run_ppo(course, reward_model, iterations=12, seed=0, lr=5e-5):
    sft, rm, tokenizer, world = course
    prompts = world.prompts("train")
    cfg = PPOConfig(iterations=iterations, batch_size=32, minibatches=2, max_new_tokens=24, lr=lr,
                    init_kl_coef=0.02, seed=seed)
    policy = copy.deepcopy(sft).requires_grad_(True)
    value = copy.deepcopy(rm).requires_grad_(True)
    _, history = train_ppo(policy, [encode_chat_prompt(tokenizer, p) for p in prompts], cfg, reference=sft,
                           reward_model=reward_model, value_model=value, tokenizer=tokenizer,
                           eval_fn=rollout_gold(world, prompts, tokenizer), progress=False)
    return history


def test_ppo_against_the_gold_labeler_raises_the_gold_score(course):
    sft, rm, tokenizer, world = course
    torch.manual_seed(0)
    # SFT is strong: a bolder step than the course's (2e-5) and 24 iterations; 2e-4 overshoots on the shipped SFT.
    # Measured on the shipped checkpoints: gold 0.860 over the first 6 iterations, 0.905 over the last 6.
    history = run_ppo(course, GoldReward(tokenizer, world, world.prompts("train")), iterations=24, lr=1e-4)
    first, last = sum(history["gold"][:6]) / 6, sum(history["gold"][-6:]) / 6
    assert last > first + 0.02, f"gold score should rise under PPO: first iterations {first:.3f}, last {last:.3f}"
    assert history["rm_reward"] == pytest.approx(history["gold"], abs=1e-6)   # the reward is the gold score
    assert all(k >= 0 for k in history["kl_k3"])


def test_seeded_ppo_runs_repeat_exactly(course):
    sft, rm, tokenizer, world = course
    a = run_ppo(course, rm, iterations=2, seed=3)
    b = run_ppo(course, rm, iterations=2, seed=3)
    for key in ("rm_reward", "gold", "kl", "policy_loss", "value_loss"):
        assert a[key] == b[key], key
