"""Reward model: padding invariance, the K-choose-2 loss against hand computations, a learning run, normalisation."""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from minirlhf.comparisons import Comparison
from minirlhf.ensemble import RewardEnsemble, single_reward_model, train_reward_ensemble
from minirlhf.model import GPT, get_config, pad_right
from minirlhf.reward import (
    RewardConfig,
    RewardModel,
    answer_surprise,
    encode_response,
    normalize_reward,
    pairwise_accuracy,
    pairwise_loss,
    score_responses,
    train_reward_model,
)
from minirlhf.tokenizer import encode_chat_prompt, train_tokenizer

WORDS = ["bobo", "kiki", "likes", "red", "blue", "green", "lives", "in", "the", "forest", "cave", "eats", "fish"]
MARKER = "please"


@pytest.fixture(scope="module")
def tok():
    sentences = [" ".join(WORDS[i:] + WORDS[:i]) + "." for i in range(len(WORDS))]
    sentences += [f"{MARKER} {w} {MARKER}." for w in WORDS] + ["what colour does bobo like?"]
    return train_tokenizer(sentences * 3, vocab_size=300)


def tiny_rm(seed=0, **overrides):
    torch.manual_seed(seed)
    return RewardModel(get_config("tiny", **overrides))


# ---- the model ---------------------------------------------------------------------------------------------


def test_padding_never_changes_a_reward(tok):
    rm = tiny_rm().eval()
    rows = [encode_response(tok, "what colour does bobo like?", r, e)
            for r, e in [("bobo likes red.", True), ("red", False), ("bobo likes red. bobo lives in the cave.", True)]]
    alone = torch.stack([rm(torch.tensor([r]))[0] for r in rows])            # (3,) no padding at all
    right_ids, right_mask = pad_right(rows, tok.pad_token_id, rm.config.block_size)
    T = right_ids.shape[1]
    left_ids = torch.full_like(right_ids, tok.pad_token_id)
    left_mask = torch.zeros_like(right_mask)
    for i, r in enumerate(rows):
        left_ids[i, T - len(r):] = torch.tensor(r)
        left_mask[i, T - len(r):] = 1
    with torch.no_grad():
        right = rm(right_ids, attention_mask=right_mask)
        left = rm(left_ids, attention_mask=left_mask)
    assert len({len(r) for r in rows}) == 3  # mixed lengths
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)
    # a different pad id at padded positions must not matter either (they are masked)
    right_ids2 = torch.where(right_mask.bool(), right_ids, tok.eos_token_id)
    torch.testing.assert_close(rm(right_ids2, attention_mask=right_mask), alone, atol=1e-5, rtol=0)


def test_reward_is_read_at_the_last_real_token(tok):
    rm = tiny_rm().eval()
    ids, mask = pad_right([[5, 6, 7], [5, 6, 7, 8, 9]], tok.pad_token_id, 64)
    values = rm.token_values(ids, mask)                                       # (2, 5)
    torch.testing.assert_close(rm(ids, mask), torch.stack([values[0, 2], values[1, 4]]))
    with pytest.raises(ValueError, match="all zeros"):
        rm(ids, torch.zeros_like(mask))


def test_the_sum_readout_adds_the_head_over_every_real_token(tok):
    torch.manual_seed(0)
    rm = RewardModel(get_config("tiny"), readout="sum").eval()
    rm.reward_bias.fill_(0.5)
    rows = [[5, 6, 7], [5, 6, 7, 8, 9]]
    ids, mask = pad_right(rows, tok.pad_token_id, 64)
    with torch.no_grad():
        values = rm.token_values(ids, mask) + 0.5                              # the head itself, (2, 5)
        expected = torch.stack([values[0, :3].sum(), values[1].sum()]) - 0.5   # bias subtracted once per answer
        torch.testing.assert_close(rm(ids, mask), expected)
        alone = torch.stack([rm(torch.tensor([r]))[0] for r in rows])         # no padding at all
        torch.testing.assert_close(rm(ids, mask), alone, atol=1e-5, rtol=0)


def test_under_the_sum_readout_the_prompt_cancels_in_a_comparison(tok):
    rm = RewardModel(get_config("tiny"), readout="sum").eval()
    prompt = "what colour does bobo like?"
    rows = [encode_response(tok, prompt, r, True) for r in ("bobo likes red.", "red")]
    n_prompt = len(encode_response(tok, prompt, "", False))
    ids, mask = pad_right(rows, tok.pad_token_id, 64)
    with torch.no_grad():
        r = rm(ids, mask)
        values = rm.token_values(ids, mask)
    answer_part = [values[i, n_prompt:len(row)].sum() for i, row in enumerate(rows)]   # the answers' tokens only
    torch.testing.assert_close(r[0] - r[1], answer_part[0] - answer_part[1], atol=1e-5, rtol=0)


def test_a_readout_is_checked_and_kept_by_checkpoints(tok, tmp_path):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint

    with pytest.raises(ValueError, match="unknown reward readout 'mean'; valid: last, sum"):
        RewardModel(get_config("tiny"), readout="mean")
    torch.manual_seed(0)
    rm = RewardModel(get_config("tiny", vocab_size=len(tok)), readout="sum").eval()
    save_checkpoint(tmp_path / "rm", rm, tok, stage="rm")
    loaded, _, _ = load_checkpoint(tmp_path / "rm")
    assert loaded.readout == "sum"
    args = (["what colour does bobo like?"] * 2, ["bobo likes red.", "red"], [True, False])
    torch.testing.assert_close(score_responses(loaded, tok, *args), score_responses(rm, tok, *args))
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    del config["extra"]["readout"]                                            # a checkpoint from before readouts
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(tmp_path / "rm")[0].readout == "last"             # is read at the last token


def test_from_gpt_copies_the_trunk():
    torch.manual_seed(1)
    gpt = GPT(get_config("tiny")).eval()
    rm = RewardModel.from_gpt(gpt).eval()
    idx = torch.randint(0, 1024, (2, 9))
    torch.testing.assert_close(rm.trunk.hidden_states(idx), gpt.hidden_states(idx))
    assert rm.trunk.transformer.wte.weight.data_ptr() != gpt.transformer.wte.weight.data_ptr()  # a copy
    d = gpt.config.n_embd
    assert rm.head_std == pytest.approx(1 / math.sqrt(d + 1))
    assert rm.head.weight.std().item() == pytest.approx(1 / math.sqrt(d + 1), rel=0.5)  # not a zero head
    assert RewardModel.from_gpt(gpt, head_std=0.3).checkpoint_extra() == {"head_std": 0.3, "readout": "last", "flags": [],
                                                                           "surprise": 0.0}
    assert "reward_bias" in rm.state_dict()


# ---- the loss: −1/C(K,2) Σ log σ(r_w − r_l) -----------------------------------------------------------------


def log_sigmoid(x):
    return -math.log(1 + math.exp(-x))


def test_pairwise_loss_k3_by_hand():
    # rewards r_0=1.0, r_1=0.0, r_2=2.0; labeler ranking best first: 2 > 0 > 1
    # pairs (w, l): (2, 0), (2, 1), (0, 1); C(3,2) = 3
    loss, acc = pairwise_loss(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[2, 0, 1]]))
    by_hand = -(1 / 3) * (log_sigmoid(2.0 - 1.0) + log_sigmoid(2.0 - 0.0) + log_sigmoid(1.0 - 0.0))
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert acc.item() == 1.0
    # the reversed ranking 1 > 0 > 2: every pair wrong
    loss, acc = pairwise_loss(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[1, 0, 2]]))
    by_hand = -(1 / 3) * (log_sigmoid(0.0 - 1.0) + log_sigmoid(0.0 - 2.0) + log_sigmoid(1.0 - 2.0))
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert acc.item() == 0.0


def test_pairwise_loss_k4_by_hand_and_mean_over_prompts():
    # prompt A: r = [0.5, -1.0, 0.0, 2.0], ranking 3 > 0 > 2 > 1 (all pairs right)
    # pairs (3,0) (3,2) (3,1) (0,2) (0,1) (2,1); C(4,2) = 6
    a = -(1 / 6) * (log_sigmoid(2.0 - 0.5) + log_sigmoid(2.0 - 0.0) + log_sigmoid(2.0 + 1.0)
                    + log_sigmoid(0.5 - 0.0) + log_sigmoid(0.5 + 1.0) + log_sigmoid(0.0 + 1.0))
    # prompt B: r = [0, 0, 0, 1], ranking 0 > 1 > 2 > 3: pairs (0,1) (0,2) (1,2) ties, (0,3) (1,3) (2,3) wrong
    b = -(1 / 6) * (3 * log_sigmoid(0.0) + 3 * log_sigmoid(-1.0))
    rewards = torch.tensor([[0.5, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    loss, acc = pairwise_loss(rewards, torch.tensor([[3, 0, 2, 1], [0, 1, 2, 3]]))
    assert loss.item() == pytest.approx((a + b) / 2, rel=1e-6)  # each prompt one batch element
    assert acc.item() == pytest.approx(6 / 12)


def test_pairwise_loss_mixed_k_with_padding():
    # K=3 prompt padded to width 4: its loss is the K=3 loss, its pad slot ignored whatever its reward
    k3 = pairwise_loss(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[2, 0, 1]]))[0]
    k4 = pairwise_loss(torch.tensor([[0.5, -1.0, 0.0, 2.0]]), torch.tensor([[3, 0, 2, 1]]))[0]
    mixed, acc = pairwise_loss(torch.tensor([[1.0, 0.0, 2.0, 99.0], [0.5, -1.0, 0.0, 2.0]]),
                               torch.tensor([[2, 0, 1, -1], [3, 0, 2, 1]]))
    assert mixed.item() == pytest.approx((k3.item() + k4.item()) / 2, rel=1e-6)
    assert acc.item() == 1.0


def test_pairwise_loss_gradient_raises_the_winner():
    rewards = torch.zeros(1, 3, requires_grad=True)
    loss, _ = pairwise_loss(rewards, torch.tensor([[1, 2, 0]]))
    loss.backward()
    g = rewards.grad[0]
    assert g[1] < 0 < g[0]  # descending the loss raises r(best) and lowers r(worst)
    assert abs(g[2]) < 1e-7  # the middle one is pushed up once and down once, equally at r = 0
    assert g.sum().abs() < 1e-6  # only differences of rewards matter


@pytest.mark.parametrize("ranking, message", [
    ([[0, 0, 1]], "permutation"), ([[0, 1, 3]], "permutation"), ([[0, -1, 1]], "permutation"),
    ([[0, -1, -1]], "at least 2"),
])
def test_pairwise_loss_rejects_bad_rankings(ranking, message):
    with pytest.raises(ValueError, match=message):
        pairwise_loss(torch.zeros(1, 3), torch.tensor(ranking))


# ---- training, accuracy, normalisation -------------------------------------------------------------------


def marker_comparisons(n, seed):
    """K=3 responses per prompt with 0, 1 and 2 marker words; more markers = better (no label noise)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        responses = []
        for m in range(3):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
            for _ in range(m):
                words.insert(rng.randint(0, len(words)), MARKER)
            responses.append(" ".join(words) + ".")
        order = list(range(3))
        rng.shuffle(order)  # responses stored in random order
        responses = [responses[j] for j in order]
        gold = [float(order[j]) for j in range(3)]  # number of markers
        out.append(Comparison(prompt={"id": i, "text": "what colour does bobo like?"}, responses=responses,
                              ended=[True] * 3, ranking=sorted(range(3), key=lambda j: -gold[j]), gold=gold,
                              sources=["synthetic"] * 3, labeler={"temperature": 0.0, "seed": seed}))
    return out


def test_training_learns_a_marker_word(tok):
    rm = tiny_rm(seed=0)
    train, val = marker_comparisons(400, seed=1), marker_comparisons(60, seed=2)
    before = pairwise_accuracy(rm, val, tok)
    cfg = RewardConfig(epochs=1, lr=1e-3, batch_prompts=2, seed=0, eval_every=80)  # 200 steps
    seen = []
    trained, history = train_reward_model(rm, (train, val), cfg, tokenizer=tok, progress=False,
                                          callback=lambda step, stats: seen.append((step, sorted(stats))))
    assert trained is rm and not rm.training
    after = pairwise_accuracy(rm, val, tok)
    assert all(isinstance(v, list) for v in history.values())    # a dict of lists
    assert len(history["loss"]) == 200 and history["val_step"] == [80, 160, 200]
    assert len(history["seconds"]) == 3 and history["seconds"][-1] > 0
    assert seen[0] == (1, ["accuracy", "loss"]) and seen[79] == (80, ["accuracy", "loss", "val_accuracy",
                                                                       "val_gold_accuracy"])
    assert sum(history["loss"][-30:]) / 30 < 0.5 * sum(history["loss"][:30]) / 30
    assert after["accuracy"] > 0.9 > before["accuracy"]
    assert after["gold_accuracy"] == after["accuracy"]  # noise-free labels: the two agree
    assert history["val_accuracy"][-1] == pytest.approx(after["accuracy"])


def test_the_head_learns_at_head_lr_mult_times_the_trunk_lr(tok):
    rm = tiny_rm(seed=5)
    head, trunk = rm.head.weight.detach().clone(), rm.trunk.transformer.wte.weight.detach().clone()
    cfg = RewardConfig(lr=1e-3, head_lr_mult=0.0, batch_prompts=4)  # a head at 0 x lr must not move
    train_reward_model(rm, (marker_comparisons(4, seed=6), None), cfg, tokenizer=tok, progress=False)
    assert torch.equal(rm.head.weight, head) and not torch.equal(rm.trunk.transformer.wte.weight, trunk)


def flagged(comparisons):
    """The marker comparisons with a labeler flag: "hallucination" marks the answers without the marker word."""
    for c in comparisons:
        c.flags = {"hallucination": [int(MARKER not in r.split()) for r in c.responses]}
    return comparisons


def test_flag_logits_are_read_at_the_last_real_token_under_any_padding(tok):
    torch.manual_seed(0)
    rm = RewardModel(get_config("tiny"), flags=("hallucination",)).eval()
    rows = [encode_response(tok, "what colour does bobo like?", r, True) for r in ("bobo likes red.", "red")]
    ids, mask = pad_right(rows, tok.pad_token_id, 64)
    rewards, logits = rm(ids, attention_mask=mask, with_flags=True)
    assert logits.shape == (2, 1) and torch.equal(rewards, rm(ids, attention_mask=mask))
    for i, row in enumerate(rows):   # each row alone, no padding: its last position
        alone_reward, alone_logits = rm(torch.tensor([row]), with_flags=True)
        assert torch.allclose(alone_logits[0], logits[i], atol=1e-5) and torch.allclose(alone_reward[0], rewards[i],
                                                                                         atol=1e-5)
    with pytest.raises(ValueError, match="no flag head"):
        tiny_rm()(ids, attention_mask=mask, with_flags=True)
    for flags in (("made_up",), ("hallucination", "hallucination")):
        with pytest.raises(ValueError, match="labeler flags"):
            RewardModel(get_config("tiny"), flags=flags)


def test_training_on_the_labelers_flags_teaches_the_flag_head(tok):
    train, val = flagged(marker_comparisons(200, seed=11)), flagged(marker_comparisons(40, seed=12))
    rm = RewardModel.from_gpt(tiny_rm(seed=1).trunk, flags=("hallucination",))
    cfg = RewardConfig(epochs=1, lr=1e-3, batch_prompts=2, seed=0, flag_coef=1.0)
    _, history = train_reward_model(rm, (train, val), cfg, tokenizer=tok, progress=False)
    assert len(history["flag_loss"]) == len(history["loss"]) == 100
    assert sum(history["flag_loss"][-20:]) / 20 < 0.5 * sum(history["flag_loss"][:20]) / 20
    rows = [encode_response(tok, c.prompt, r, e) for c in val for r, e in zip(c.responses, c.ended)]
    ids, mask = pad_right(rows, tok.pad_token_id, 64)
    with torch.no_grad():
        _, logits = rm(ids, attention_mask=mask, with_flags=True)
    marks = torch.tensor([m for c in val for m in c.flags["hallucination"]])
    assert ((logits[:, 0] > 0).long() == marks).float().mean() > 0.9
    assert pairwise_accuracy(rm, val, tok)["accuracy"] > 0.8   # and it still ranks


def test_flag_coef_needs_a_flag_head_and_flagged_comparisons(tok):
    cfg = RewardConfig(flag_coef=1.0)
    with pytest.raises(ValueError, match="has no flags"):
        train_reward_model(tiny_rm(), (flagged(marker_comparisons(2, seed=1)), None), cfg, tokenizer=tok,
                           progress=False)
    with pytest.raises(ValueError, match=r"comparison 0 has no labeler flag\(s\) \['hallucination'\]"):
        train_reward_model(RewardModel(get_config("tiny"), flags=("hallucination",)),
                           (marker_comparisons(2, seed=1), None), cfg, tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="flag_coef"):
        RewardConfig(flag_coef=-1.0)


def test_a_flag_head_survives_a_checkpoint_and_an_ensemble(tok, tmp_path):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint
    torch.manual_seed(4)
    rm = RewardModel(get_config("tiny"), flags=("hallucination",)).eval()
    save_checkpoint(tmp_path / "rm", rm, tok, stage="rm")
    loaded, _, _ = load_checkpoint(tmp_path / "rm")
    assert loaded.flags == ("hallucination",) and torch.equal(loaded.flag_head.weight, rm.flag_head.weight)
    ensemble = RewardEnsemble.from_members([rm, loaded])
    assert ensemble.flags == ("hallucination",) and ensemble.checkpoint_extra()["flags"] == ["hallucination"]
    save_checkpoint(tmp_path / "ens", ensemble, tok, stage="rm")
    assert load_checkpoint(tmp_path / "ens")[0].flags == ("hallucination",)


# ---- the SFT model's surprise -----------------------------------------------------------------------------


QUESTION = "what colour does bobo like?"


def surprise_by_hand(reference, tok, prompt, response, ended):
    """max over the answer's tokens of −log p(token | everything before it), one unpadded row, a Python loop."""
    ids = encode_response(tok, prompt, response, ended)
    start = len(encode_chat_prompt(tok, prompt))                          # the answer's first token
    with torch.no_grad():
        logp = torch.log_softmax(reference(torch.tensor([ids]))[0][0], dim=-1)   # (T, V)
    return max([-logp[t - 1, ids[t]].item() for t in range(start, len(ids))], default=0.0)


def test_answer_surprise_is_the_answers_least_expected_token_under_padding(tok):
    torch.manual_seed(0)
    reference = GPT(get_config("tiny", vocab_size=len(tok))).eval()
    rows = [(QUESTION, "bobo likes red.", True), (QUESTION, "blue", False), (QUESTION, "", False),
            ("kiki?", "bobo lives in the cave. bobo eats fish.", True)]
    ids, mask = pad_right([encode_response(tok, *r) for r in rows], tok.pad_token_id, 128)
    got = answer_surprise(reference, ids, mask)
    torch.testing.assert_close(got, torch.tensor([surprise_by_hand(reference, tok, *r) for r in rows]))
    assert got[2] == 0 and (got[[0, 1, 3]] > 0).all()                     # an empty answer surprises no one
    with pytest.raises(ValueError, match=r"row 1 has no <\|assistant\|> token"):
        answer_surprise(reference, torch.tensor([encode_response(tok, QUESTION, "red", True)[-5:],
                                                 tok.encode("bobo likes red. bobo likes red.")[:5]]))


def test_the_reward_loses_lambda_per_nat_of_surprise_and_the_reference_stays_frozen(tok):
    torch.manual_seed(1)
    sft = GPT(get_config("tiny", vocab_size=len(tok)))
    torch.manual_seed(2)
    plain = RewardModel.from_gpt(sft).eval()
    torch.manual_seed(2)
    rm = RewardModel.from_gpt(sft, surprise=0.5).eval()                   # the same head draw
    rows = ([QUESTION] * 3, ["bobo likes red.", "bobo likes blue.", "red"], [True, True, False])
    ids, mask = pad_right([encode_response(tok, *r) for r in zip(*rows)], tok.pad_token_id, 128)
    s = answer_surprise(sft.eval(), ids, mask)
    torch.testing.assert_close(score_responses(rm, tok, *rows), score_responses(plain, tok, *rows) - 0.5 * s)
    reference = {k: v.clone() for k, v in rm.reference.state_dict().items()}
    trunk = rm.trunk.transformer.h[0].attn.c_attn.weight.clone()
    train_reward_model(rm, (marker_comparisons(16, seed=0), None), RewardConfig(epochs=1, lr=1e-3, batch_prompts=4),
                       tokenizer=tok, progress=False)
    assert all(torch.equal(v, rm.reference.state_dict()[k]) for k, v in reference.items())   # the SFT model as it was
    assert not torch.equal(trunk, rm.trunk.transformer.h[0].attn.c_attn.weight)              # while the trunk learned
    assert not rm.train().reference.training                              # and never in training mode


def test_surprise_is_checked_and_kept_by_checkpoints_and_ensembles(tok, tmp_path):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="surprise="):
            RewardModel(get_config("tiny"), surprise=bad)
    assert RewardModel(get_config("tiny")).reference is None               # λ = 0: no second model
    torch.manual_seed(3)
    rm = RewardModel(get_config("tiny", vocab_size=len(tok)), surprise=0.25).eval()
    save_checkpoint(tmp_path / "rm", rm, tok, stage="rm")
    loaded, _, _ = load_checkpoint(tmp_path / "rm")
    assert loaded.surprise == 0.25 and torch.equal(loaded.reference.lm_head.weight, rm.reference.lm_head.weight)
    args = ([QUESTION] * 2, ["bobo likes red.", "red"], [True, False])
    torch.testing.assert_close(score_responses(loaded, tok, *args), score_responses(rm, tok, *args))
    ensemble = RewardEnsemble.from_members([rm, loaded])
    assert ensemble.surprise == 0.25 and ensemble.checkpoint_extra()["surprise"] == 0.25
    with pytest.raises(ValueError, match="differ in architecture"):
        RewardEnsemble.from_members([rm, RewardModel(rm.config)])


def test_pairwise_accuracy_uses_the_ranking_and_the_gold_order(tok):
    # a "reward model" stand-in is overkill: flip the ranking of the marker data, and the accuracy vs the
    # stored ranking becomes 1 − accuracy vs gold
    rm = tiny_rm(seed=3)
    data = marker_comparisons(20, seed=4)
    flipped = [Comparison(c.prompt, c.responses, c.ended, c.ranking[::-1], c.gold, c.sources, c.labeler) for c in data]
    a, b = pairwise_accuracy(rm, data, tok), pairwise_accuracy(rm, flipped, tok)
    assert a["pairs"] == b["pairs"] == 60
    assert b["accuracy"] == pytest.approx(1 - a["accuracy"])
    assert b["gold_accuracy"] == pytest.approx(a["gold_accuracy"])


def test_normalize_reward_centres_the_demonstrations(tok):
    rm = tiny_rm(seed=5)
    demos = [SimpleNamespace(prompt=SimpleNamespace(text="what colour does bobo like?"), response=r)
             for r in ["bobo likes red.", "kiki likes blue.", "bobo lives in the cave.", "please eats fish."]]
    bias = normalize_reward(rm, demos, tok)
    scores = score_responses(rm, tok, [d.prompt for d in demos], [d.response for d in demos], [True] * 4)
    assert abs(scores.mean().item()) < 1e-5
    assert rm.reward_bias.item() == bias != 0.0
    assert normalize_reward(rm, demos, tok) == pytest.approx(bias)  # idempotent


def test_score_responses_matches_single_forward_passes(tok):
    rm = tiny_rm(seed=6).eval()
    prompts = ["what colour does bobo like?", {"id": 1, "text": "kiki"}]
    responses, ended = ["bobo likes red.", "kiki likes blue blue blue"], [True, False]
    batched = score_responses(rm, tok, prompts, responses, ended, batch_size=1)
    one = torch.stack([rm(torch.tensor([encode_response(tok, p, r, e)]))[0] for p, r, e in zip(prompts, responses, ended)])
    torch.testing.assert_close(batched, one.detach(), atol=1e-5, rtol=0)
    assert encode_response(tok, "x", "y", True)[-1] == tok.eos_token_id
    assert encode_response(tok, "x", "y", False)[-1] != tok.eos_token_id
    with pytest.raises(ValueError, match="one of each"):
        score_responses(rm, tok, prompts, responses, [True])
    with pytest.raises(ValueError, match="context"):
        score_responses(rm, tok, ["x"], ["bobo " * 80], [True])


def test_checkpoint_round_trip_keeps_rewards_and_bias(tok, tmp_path):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint

    rm = tiny_rm(seed=7, vocab_size=len(tok)).eval()
    rm.reward_bias.fill_(0.25)
    save_checkpoint(tmp_path / "rm", rm, tok, stage="rm")
    loaded, _, metadata = load_checkpoint(tmp_path / "rm")
    assert type(loaded) is RewardModel and metadata["stage"] == "rm"
    assert loaded.head_std == rm.head_std and loaded.reward_bias.item() == 0.25
    args = (["what colour does bobo like?"] * 2, ["bobo likes red.", "red"], [True, False])
    torch.testing.assert_close(score_responses(loaded, tok, *args), score_responses(rm, tok, *args))


# ---- probes: one failure type at a time -----------------------------------------------------------------------


def test_probe_pairs_break_the_ideal_answer_one_way_each():
    from minirlhf.probes import FAILURE_TYPES, probe_pairs
    from minirlhf.world import RUDE_WORDS, World, WorldConfig
    from minirlhf.world.gold import gold_score

    world = World(WorldConfig(n_documents=10))
    prompts = world.prompts("val")[:40]
    pairs = probe_pairs(world, prompts)
    assert tuple(pairs) == FAILURE_TYPES
    for kind, items in pairs.items():
        assert len(items) >= 20, kind
        for p in items:
            assert p.good == world.ideal_response(p.prompt) and p.good_ended
            assert gold_score(world, p.prompt, p.bad, p.bad_ended).total < gold_score(world, p.prompt, p.good).total
    assert all(p.bad == p.good and not p.bad_ended for p in pairs["unended"])
    assert all(any(w in p.bad.split() for w in RUDE_WORDS) and p.good in p.bad for p in pairs["rude"])
    assert all(p.bad.startswith(p.good + " ") and len(p.bad) > len(p.good) for p in pairs["repeated"])
    assert all(len(p.bad.split()) == len(p.good.split()) != p.bad for p in pairs["wrong_fact"])
    assert all(p.prompt.task != "list" for p in pairs["wrong_fact"])
    assert all(p.bad != p.good and p.bad_ended for p in pairs["off_topic"])
    assert probe_pairs(world, prompts) == pairs  # seeded


def test_probe_accuracy_counts_r_good_above_r_bad(tok):
    from minirlhf.probes import ProbePair, probe_accuracy

    rm = tiny_rm(seed=8).eval()
    prompt = SimpleNamespace(text="what colour does bobo like?")
    items = [ProbePair(prompt, "bobo likes red.", True, bad, ended)
             for bad, ended in [("bobo likes red.", False), ("ugh bobo likes red.", True), ("red red", True)]]
    good = score_responses(rm, tok, [prompt] * 3, [p.good for p in items], [True] * 3)
    bad = score_responses(rm, tok, [prompt] * 3, [p.bad for p in items], [p.bad_ended for p in items])
    result = probe_accuracy(rm, tok, {"mixed": items, "empty": []})
    assert result["mixed"] == pytest.approx((good > bad).float().mean().item())
    assert math.isnan(result["empty"])


# ---- ensembles: the mean of M reward models (ensemble.py) ---------------------------------------------------


def trained_like(members):
    """Members whose rewards differ: each a RewardModel with its own random head (and trunk)."""
    out = []
    for seed in members:
        torch.manual_seed(seed)
        out.append(RewardModel(get_config("tiny")).eval())
    return out


def test_the_ensemble_reward_is_the_members_mean_minus_its_bias():
    members = trained_like([1, 2, 3])
    members[1].reward_bias.fill_(0.3)                                     # each member keeps its own bias
    ensemble = RewardEnsemble.from_members(members).eval()
    ensemble.reward_bias.fill_(0.5)
    ids, mask = pad_right([[5, 6, 7], [8, 9, 10, 11, 12]], 0, 64)
    each = torch.stack([m(ids, mask) for m in members])                   # (M, B)
    assert not torch.allclose(each[0], each[1])
    torch.testing.assert_close(ensemble(ids, mask), each.mean(dim=0) - 0.5)   # r = 1/M Σ r_m − bias
    values = torch.stack([m.token_values(ids, mask) for m in members]).mean(dim=0) - 0.5
    torch.testing.assert_close(ensemble.token_values(ids, mask), values)
    torch.testing.assert_close(ensemble(ids, mask)[1], ensemble.token_values(ids, mask)[1, 4])   # last real token
    assert single_reward_model(ensemble) is ensemble.members[0] and single_reward_model(members[0]) is members[0]


def test_from_members_copies_and_refuses_mixed_architectures():
    members = trained_like([1, 2])
    ensemble = RewardEnsemble.from_members(members)
    assert ensemble.members[0].head.weight.data_ptr() != members[0].head.weight.data_ptr()   # a copy
    assert torch.equal(ensemble.members[1].head.weight, members[1].head.weight)
    torch.manual_seed(0)
    other = RewardModel(get_config("tiny", n_layer=1))
    with pytest.raises(ValueError, match="differ in architecture"):
        RewardEnsemble.from_members([members[0], other])
    summed = RewardModel(get_config("tiny"), readout="sum")
    summed.load_state_dict(members[1].state_dict())
    with pytest.raises(ValueError, match="GPTConfig, head_std, readout, flags or surprise"):   # same weights, read another way
        RewardEnsemble.from_members([members[0], summed])
    assert RewardEnsemble.from_members([summed]).readout == "sum"           # kept, not reset to "last"
    with pytest.raises(ValueError, match="at least one"):
        RewardEnsemble.from_members([])
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n_members"):
            RewardEnsemble(get_config("tiny"), n_members=bad)


def test_an_ensemble_checkpoint_loads_as_an_ensemble(tok, tmp_path):
    from minirlhf.checkpoint import load_checkpoint, save_checkpoint

    members = []
    for seed in (4, 5):
        torch.manual_seed(seed)
        members.append(RewardModel(get_config("tiny", vocab_size=len(tok))))
    ensemble = RewardEnsemble.from_members(members).eval()
    ensemble.reward_bias.fill_(-0.25)
    save_checkpoint(tmp_path / "rm", ensemble, tok, stage="rm")
    loaded, _, _ = load_checkpoint(tmp_path / "rm")
    assert type(loaded) is RewardEnsemble and len(loaded.members) == 2 and loaded.reward_bias.item() == -0.25
    args = (["what colour does bobo like?"] * 2, ["bobo likes red.", "red"], [True, False])
    torch.testing.assert_close(score_responses(loaded, tok, *args), score_responses(ensemble, tok, *args))


def test_member_zero_is_the_single_reward_model_and_the_ensemble_learns(tok):
    torch.manual_seed(0)
    sft = GPT(get_config("tiny", vocab_size=len(tok))).eval()
    train, val = marker_comparisons(120, seed=1), marker_comparisons(60, seed=2)
    cfg = RewardConfig(epochs=1, lr=1e-3, batch_prompts=2, seed=0)
    torch.manual_seed(9)
    single, _ = train_reward_model(RewardModel.from_gpt(sft), (train, val), cfg, tokenizer=tok, progress=False)
    torch.manual_seed(9)
    ensemble, histories = train_reward_ensemble(sft, (train, val), cfg, 2, tokenizer=tok, progress=False)
    assert len(histories) == 2 and len(histories[0]["loss"]) == 60
    for a, b in zip(single.state_dict().values(), ensemble.members[0].state_dict().values()):
        assert torch.equal(a, b)                               # same draw, same data, same order: the same RM
    assert not torch.equal(ensemble.members[0].head.weight, ensemble.members[1].head.weight)   # another draw
    assert pairwise_accuracy(ensemble, val, tok)["accuracy"] > 0.9
    demos = [type("D", (), {"prompt": "what colour does bobo like?", "response": r})()
             for r in ["bobo likes red.", "please kiki please."]]
    normalize_reward(ensemble, demos, tok)
    scores = score_responses(ensemble, tok, [d.prompt for d in demos], [d.response for d in demos], [True, True])
    assert abs(scores.mean().item()) < 1e-5                  # centred like one RM
    with pytest.raises(ValueError, match="n_members"):
        train_reward_ensemble(sft, (train, val), cfg, 0, tokenizer=tok, progress=False)


def test_the_shipped_sft_models_surprise_sees_the_wrong_facts_the_shipped_reward_model_misses():
    """The shipped SFT model's surprise alone orders nearly every wrong-fact probe; the shipped RM (InstructGPT's, no
    prior) misses more; the same RM with the prior at λ = 0.1 added (no retraining) sees ≥ 0.95 (docs/calibration.md)."""
    from minirlhf.course.shipped import load_stage
    from minirlhf.probes import probe_accuracy, probe_pairs
    from minirlhf.world import default_world

    sft, tok, _ = load_stage("sft")
    rm, _, _ = load_stage("rm", tokenizer=tok)
    assert rm.surprise == 0                                               # the course's RM has no prior
    with_prior = RewardModel(rm.config, head_std=rm.head_std, surprise=0.1).eval()
    with_prior.load_state_dict({**rm.state_dict(), **{f"reference.{k}": w for k, w in sft.state_dict().items()}})
    world = default_world()
    pairs = {"wrong_fact": probe_pairs(world, world.prompts("test"))["wrong_fact"]}
    good = [encode_response(tok, p.prompt, p.good, True) for p in pairs["wrong_fact"]]
    bad = [encode_response(tok, p.prompt, p.bad, True) for p in pairs["wrong_fact"]]
    s_good, s_bad = (answer_surprise(sft, *pad_right(rows, tok.pad_token_id, 128)) for rows in (good, bad))
    assert (s_bad > s_good).float().mean() >= 0.95                       # the SFT model knows the facts
    plain = probe_accuracy(rm, tok, pairs)["wrong_fact"]
    assert probe_accuracy(with_prior, tok, pairs)["wrong_fact"] >= max(0.95, plain + 0.05)
