"""The notebooks' widgets: their logic as plain functions (seeded, validated), and builders that work headless."""

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, no window

import ipywidgets as w  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minirlhf.chat import chat_turn  # noqa: E402
from minirlhf.comparisons import load_comparisons  # noqa: E402
from minirlhf.course import widgets  # noqa: E402
from minirlhf.model import GPT, get_config  # noqa: E402
from minirlhf.world import default_world  # noqa: E402
from minirlhf.world.gold import NoisyRanker, gold_score  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return default_world()


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=len(tiny_tokenizer), block_size=128)).eval()


@pytest.fixture(scope="module")
def models(model, tiny_tokenizer):
    torch.manual_seed(1)
    other = GPT(get_config("tiny", vocab_size=len(tiny_tokenizer), block_size=128)).eval()
    return {"pretrained": model, "sft": other}


def find(widget, cls) -> list:
    """Every widget of type cls inside a container, depth first."""
    found = [widget] if isinstance(widget, cls) else []
    for child in getattr(widget, "children", ()):
        found += find(child, cls)
    return found


# ------------------------------------------------------------------------------------------------------------------
# 1. Prompt playground


def test_playground_reply_is_seeded(models, tiny_tokenizer):
    args = (models, tiny_tokenizer, "pretrained", "what colour does bobo like ?", 1.0, 0)
    first = widgets.playground_reply(*args, seed=3, max_new_tokens=12)
    assert widgets.playground_reply(*args, seed=3, max_new_tokens=12) == first
    others = {widgets.playground_reply(*args, seed=s, max_new_tokens=12) for s in range(4, 8)}
    assert others - {first}, "different seeds should give different samples from an untrained model"


def test_playground_chat_and_raw_text_match_the_package(models, tiny_tokenizer):
    model, tok = models["sft"], tiny_tokenizer
    greedy_chat = widgets.playground_reply(models, tok, "sft", "name two foods .", temperature=0, max_new_tokens=10)
    expected, _ = chat_turn(model, tok, [{"role": "user", "content": "name two foods ."}], max_new_tokens=10,
                            temperature=0)
    assert greedy_chat == expected
    ids = tok.encode("bobo lives in a", add_special_tokens=False)
    out = model.generate([ids], 10, temperature=0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    raw = widgets.playground_reply(models, tok, "sft", "bobo lives in a", temperature=0, max_new_tokens=10, chat=False)
    assert raw == tok.decode(out.response_ids[0], skip_special_tokens=True)
    # top-k = 1 keeps only the most likely token: sampling then IS greedy decoding, whatever the seed
    top1 = widgets.playground_reply(models, tok, "sft", "bobo lives in a", temperature=1.0, top_k=1, seed=9,
                                    max_new_tokens=10, chat=False)
    assert top1 == raw


def test_playground_rejects_unknown_models_and_long_prompts(models, tiny_tokenizer):
    with pytest.raises(ValueError, match="choose one of"):
        widgets.playground_reply(models, tiny_tokenizer, "gpt4", "hi")
    with pytest.raises(ValueError, match="context"):
        widgets.playground_reply(models, tiny_tokenizer, "sft", "bobo likes red . " * 40, chat=False)


# ------------------------------------------------------------------------------------------------------------------
# 2. Be the labeler


def test_ranking_from_ranks_and_pair_agreement():
    assert widgets.ranking_from_ranks([2, 1, 3]) == [1, 0, 2]
    assert widgets.ranking_from_ranks([4, 3, 2, 1]) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="exactly once"):
        widgets.ranking_from_ranks([1, 1, 2])
    # ranked 0 > 1 > 2 with gold [0.9, 0.5, 0.5]: pairs (0,1), (0,2) agree, (1,2) is a gold tie and not judged
    assert widgets.pair_agreement([0, 1, 2], [0.9, 0.5, 0.5]) == (2, 2)
    assert widgets.pair_agreement([2, 1, 0], [0.9, 0.5, 0.1]) == (0, 3)


@pytest.fixture()
def session(world, model, tiny_tokenizer):
    return widgets.LabelingSession(world.prompts("val")[:4], model, tiny_tokenizer, world, k=4, seed=0,
                                   max_new_tokens=12)


def test_labeling_session_samples_distinct_answers_reproducibly(session, world, model, tiny_tokenizer):
    assert len(session) == 4 and session.position == 0
    prompt_text, responses = session.current()
    assert prompt_text == world.prompts("val")[0].text
    assert 2 <= len(responses) <= 4
    for _, texts, ended in session.items:
        assert len(set(zip(texts, ended))) == len(texts), "duplicate answers cannot be ranked"
    again = widgets.LabelingSession(world.prompts("val")[:4], model, tiny_tokenizer, world, k=4, seed=0,
                                    max_new_tokens=12)
    assert [i[1] for i in again.items] == [i[1] for i in session.items]


def test_submit_validates_the_ranking(session):
    K = len(session.current()[1])
    for bad in ([0] * K, list(range(K + 1)), list(range(1, K + 1)), ["best"]):
        with pytest.raises(ValueError, match="permutation|answer indices"):
            session.submit(bad)
    assert session.position == 0 and not session.comparisons  # nothing stored by a bad submission
    c = session.submit(list(range(K))[::-1])
    assert c.ranking == list(range(K))[::-1] and c.labeler == {"name": "you"}
    assert session.position == 1


def test_agreement_with_gold_on_known_answers(session, world):
    prompt = world.prompts("val")[0]
    ideal = world.ideal_response(prompt)
    texts = [ideal, "ugh , " + ideal, "the weather is nice today ."]
    session.items = [(prompt, texts, [True, True, False])] * 2
    gold = [gold_score(world, prompt, t, e).total for t, e in zip(texts, [True, True, False])]
    order = sorted(range(3), key=lambda k: -gold[k])
    assert len(set(gold)) == 3
    session.submit(order)
    assert session.agreement_with_gold() == 1.0
    session.submit(order[::-1])
    assert session.agreement_with_gold() == 0.5  # 3 pairs right, then 3 wrong
    assert session.comparisons[0].gold == pytest.approx(gold)
    with pytest.raises(ValueError, match="already labeled"):
        session.submit([0, 1, 2])


def test_save_round_trip_and_auto_label(session, tmp_path):
    with pytest.raises(ValueError, match="nothing to save"):
        session.save(tmp_path / "none.jsonl")
    K = len(session.current()[1])
    session.submit(list(range(K)))
    with pytest.raises(ValueError, match="no comparisons by"):
        session.agreement_with_gold("simulated")
    assert session.auto_label(NoisyRanker(seed=1)) == len(session) - 1
    assert session.done and session.current() is None
    assert [c.labeler["name"] for c in session.comparisons] == ["you"] + ["simulated"] * (len(session) - 1)
    loaded = load_comparisons(session.save(tmp_path / "mine.jsonl"))
    assert loaded == session.comparisons
    everyone = session.agreement_with_gold(labeler=None)
    assert everyone != everyone or 0.0 <= everyone <= 1.0  # NaN only if every gold pair tied


# ------------------------------------------------------------------------------------------------------------------
# 3. β slider

POINTS = [{"beta": 0.01, "kl": 9.0, "rm_reward": 1.2, "gold": 0.40}, {"beta": 0.05, "kl": 4.0, "rm_reward": 0.9,
          "gold": 0.55}, {"beta": 0.1, "kl": 2.0, "rm_reward": 0.6, "gold": 0.50},
          {"beta": 0.5, "kl": 0.3, "rm_reward": 0.2, "gold": 0.42}]


def test_sweep_point_is_the_nearest_beta():
    assert widgets.sweep_point(POINTS, 0.06)["beta"] == 0.05
    assert widgets.sweep_point(POINTS, 0.4)["beta"] == 0.5
    assert widgets.sweep_point(POINTS, 0.1) == POINTS[2]
    assert widgets.sweep_point(POINTS, 100)["beta"] == 0.5
    assert widgets.sweep_point(POINTS, 0.0)["beta"] == 0.01
    widgets.sweep_point(POINTS, 0.1)["gold"] = -1
    assert POINTS[2]["gold"] == 0.50, "sweep_point must return a copy"
    with pytest.raises(ValueError, match="no sweep points"):
        widgets.sweep_point([], 0.1)
    with pytest.raises(ValueError, match="lacks"):
        widgets.sweep_point([{"beta": 0.1}], 0.1)


def test_frontier_figure_rings_the_chosen_point():
    fig = widgets.frontier_figure(POINTS, 0.05)
    rm_panel, gold_panel = fig.axes[:2]
    assert rm_panel.collections[-1].get_offsets().tolist() == [[4.0, 0.9]]
    assert gold_panel.collections[-1].get_offsets().tolist() == [[4.0, 0.55]]
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------------
# 4. Chat


def test_chat_session_keeps_history_and_is_seeded(model, tiny_tokenizer):
    chat = widgets.ChatSession(model, tiny_tokenizer, temperature=1.0, seed=5, max_new_tokens=12)
    r1 = chat.send("what colour does bobo like ?")
    r2 = chat.send("tell me about kiki .")
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in chat.messages] == ["what colour does bobo like ?", r1, "tell me about kiki .", r2]
    assert "you: tell me about kiki ." in chat.transcript()
    again = widgets.ChatSession(model, tiny_tokenizer, temperature=1.0, seed=5, max_new_tokens=12)
    assert [again.send("what colour does bobo like ?"), again.send("tell me about kiki .")] == [r1, r2]
    chat.reset()
    assert chat.messages == [] and chat.transcript() == ""
    assert chat.send("what colour does bobo like ?") == r1  # reset restarts the random stream too


def test_chat_second_turn_sees_the_first(model, tiny_tokenizer):
    chat = widgets.ChatSession(model, tiny_tokenizer, temperature=0, max_new_tokens=8)
    first = chat.send("name two foods .")
    second = chat.send("red and blue .")
    history = [{"role": "user", "content": "name two foods ."}, {"role": "assistant", "content": first},
               {"role": "user", "content": "red and blue ."}]
    assert second == chat_turn(model, tiny_tokenizer, history, max_new_tokens=8, temperature=0)[0]


def test_long_chat_is_trimmed_not_refused(model, tiny_tokenizer):
    chat = widgets.ChatSession(model, tiny_tokenizer, temperature=1.0, max_new_tokens=48)
    for i in range(8):  # far more than 128 tokens of history: old turns are dropped from the prompt
        chat.send(f"tell me about kiki . kiki likes green . kiki lives in a barn . turn {i}")
    assert len(chat.messages) == 16
    with pytest.raises(ValueError, match="empty"):
        chat.send("   ")


# ------------------------------------------------------------------------------------------------------------------
# Builders (no frontend needed) and headless fallbacks


def test_prompt_playground_builds_and_generates(models, tiny_tokenizer, capsys):
    ui = widgets.prompt_playground(models, tiny_tokenizer, max_new_tokens=8)
    assert isinstance(ui, w.VBox)
    assert find(ui, w.Dropdown)[0].options == ("pretrained", "sft")
    assert (find(ui, w.FloatSlider)[0].min, find(ui, w.FloatSlider)[0].max) == (0.0, 1.5)
    assert (find(ui, w.IntSlider)[0].min, find(ui, w.IntSlider)[0].max) == (0, 50)
    assert find(ui, w.Checkbox)[0].value is True and find(ui, w.Textarea) and find(ui, w.Output)
    find(ui, w.Button)[0].click()  # outside a kernel the Output widget lets prints through
    expected = widgets.playground_reply(models, tiny_tokenizer, "pretrained", "what colour does kika like ?",
                                        0.7, 0, 0, 8, True)
    assert expected in capsys.readouterr().out


def test_labeling_ui_submits_through_the_session(session):
    ui = widgets.labeling_ui(session)
    assert isinstance(ui, w.VBox)
    K = len(session.current()[1])
    ranks = find(ui, w.Dropdown)
    assert len(ranks) == K
    submit = next(b for b in find(ui, w.Button) if b.description.startswith("Submit"))
    ranks[0].value, ranks[1].value = 2, 1  # swap: answer 1 is best
    submit.click()
    assert session.position == 1
    assert session.comparisons[0].ranking == [1, 0] + list(range(2, K))
    assert find(ui, w.IntProgress)[0].value == 1


def test_beta_slider_builds(capsys):
    ui = widgets.beta_slider(POINTS, {0.05: ["bobo likes red ."], 0.5: ["red ."]})
    slider = find(ui, w.SelectionSlider)[0]
    assert [label for label, _ in slider.options] == ["0.01", "0.05", "0.1", "0.5"]
    slider.value = 0.05
    assert slider.label == "0.05"
    assert "β = 0.05" in capsys.readouterr().out
    plt.close("all")


def test_chat_ui_builds_with_a_session_or_several_models(model, models, tiny_tokenizer):
    chat = widgets.ChatSession(model, tiny_tokenizer, max_new_tokens=6)
    ui = widgets.chat_ui(chat)
    assert not find(ui, w.Dropdown), "one model: no dropdown"
    find(ui, w.Text)[0].value = "name two foods ."
    next(b for b in find(ui, w.Button) if b.description == "Send").click()
    assert len(chat.messages) == 2
    ui = widgets.chat_ui(models, tiny_tokenizer)
    assert find(ui, w.Dropdown)[0].options == ("pretrained", "sft")
    with pytest.raises(ValueError, match="tokenizer"):
        widgets.chat_ui(models)


def test_fallbacks_print_deterministic_examples(models, model, tiny_tokenizer, session, capsys):
    text = widgets.playground_fallback(models, tiny_tokenizer, max_new_tokens=6)
    assert text == widgets.playground_fallback(models, tiny_tokenizer, max_new_tokens=6)
    assert "dema lives in a" in text and "[playground]" in capsys.readouterr().out
    text = widgets.labeling_fallback(session)
    assert "gold order" in text and session.position == 0  # a preview: labels nothing
    assert "β = 0.1" in widgets.beta_fallback(POINTS, {0.1: ["bobo likes red ."]})
    text = widgets.chat_fallback(model, tiny_tokenizer, max_new_tokens=8)
    assert text == widgets.chat_fallback(model, tiny_tokenizer, max_new_tokens=8) and text.count("you:") == 2
    assert "[chat]" in capsys.readouterr().out


def test_show_displays_the_widget_and_runs_the_fallback(models, tiny_tokenizer, capsys):
    ui = widgets.show(lambda: widgets.prompt_playground(models, tiny_tokenizer),
                      lambda: print("fallback ran"))
    assert isinstance(ui, w.VBox)
    out = capsys.readouterr().out
    assert "VBox" in out and "fallback ran" in out
