"""The notebooks' interactive UIs (ipywidgets): a prompt playground, "be the labeler", a β slider and a chat box.

Every UI has three parts, so it works both live and in a notebook executed headless (CI, nbval):

  (a) plain functions holding the logic (`playground_reply`, `LabelingSession`, `sweep_point`, `ChatSession`):
      the tests call these, and so can a learner without widgets;
  (b) a builder (`prompt_playground`, `labeling_ui`, `beta_slider`, `chat_ui`) returning an ipywidgets container
      whose callbacks only call (a);
  (c) a `..._fallback` that prints a deterministic example of what the UI does.

`show(ui, fallback)` displays the widget AND runs the fallback, so an executed notebook always carries a text
result (GitHub does not render widgets; the notebooks are committed without widget state).
ipywidgets is imported inside the builders only: the logic works without it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from itertools import combinations

import torch

from minirlhf.chat import chat_turn, generate_responses
from minirlhf.comparisons import Comparison, save_comparisons
from minirlhf.world import Prompt
from minirlhf.world.gold import NoisyRanker, gold_score

EXAMPLE_PROMPTS = {  # what the playground fallback shows: a chat question, GPT-2's zero-shot, GPT-3's few-shot
    "chat": ("what colour does kika like ?", True),
    "zero-shot": ("dema lives in a", False),
    "few-shot": ("game :\nfase red\ndiko blue\nfase", False),
}


def show(ui, fallback=None):
    """Display a widget (or a zero-argument builder of one) and print the fallback's deterministic example.

    Live, the learner sees both; executed headless, the fallback's text is what the saved notebook shows.
    Returns the widget.
    """
    from IPython.display import display

    widget = ui() if callable(ui) else ui
    display(widget)
    if fallback is not None:
        fallback()
    return widget


def _generator(model, seed: int) -> torch.Generator:
    device = next(model.parameters()).device
    return torch.Generator(device=device).manual_seed(int(seed))


def _top_k(top_k: int | None) -> int | None:
    return None if top_k is None or int(top_k) <= 0 else int(top_k)  # the slider's 0 means "off"


# ------------------------------------------------------------------------------------------------------------------
# 1. Prompt playground


def playground_reply(models: dict, tokenizer, model_name: str, prompt: str, temperature: float = 0.7,
                     top_k: int | None = 0, seed: int = 0, max_new_tokens: int = 40, chat: bool = True) -> str:
    """One sampled answer of models[model_name] to `prompt`, reproducible for a given seed.

    chat=True: the prompt is the user's turn of a chat ("<|user|>prompt\\n<|assistant|>"), as for SFT/PPO models.
    chat=False: raw text to continue, as a pre-trained model sees it: "dema lives in a" (GPT-2 zero-shot) or a
    "game :" pattern with examples (GPT-3 few-shot). temperature 0 = greedy; top_k 0 or None = no top-k filter.
    """
    if model_name not in models:
        raise ValueError(f"no model named {model_name!r}; choose one of {sorted(models)}")
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty; type a question (chat) or some text to continue")
    model = models[model_name]
    generator = _generator(model, seed)
    if chat:
        reply, _ = chat_turn(model, tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=_top_k(top_k), generator=generator)
        return reply
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    block = model.config.block_size
    if len(ids) + max_new_tokens > block:
        raise ValueError(f"the prompt is {len(ids)} tokens; with {max_new_tokens} new tokens that exceeds the "
                         f"model's context of {block}. Shorten the prompt or lower max_new_tokens")
    out = model.generate([ids], max_new_tokens, temperature=temperature, top_k=_top_k(top_k),
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=generator)
    return tokenizer.decode(out.response_ids[0], skip_special_tokens=True)


def playground_fallback(models: dict, tokenizer, prompts: dict | None = None, temperature: float = 0.7,
                        top_k: int = 0, seed: int = 0, max_new_tokens: int = 40) -> str:
    """Print each model's answer to a few example prompts (seeded); returns the printed text."""
    prompts = EXAMPLE_PROMPTS if prompts is None else prompts
    lines = [f"[playground] temperature={temperature:g}, top_k={top_k or 'off'}, seed={seed}"]
    for kind, (prompt, chat) in prompts.items():
        lines.append(f"--- {kind} ({'chat turn' if chat else 'raw text'}): {prompt!r}")
        for name in models:
            try:
                reply = playground_reply(models, tokenizer, name, prompt, temperature, top_k, seed, max_new_tokens, chat)
            except ValueError as e:  # e.g. a prompt longer than a small model's context
                reply = f"(cannot answer: {e})"
            lines.append(f"  {name:>12}: {reply!r}")
    text = "\n".join(lines)
    print(text)
    return text


def prompt_playground(models: dict, tokenizer, prompt: str = EXAMPLE_PROMPTS["chat"][0], max_new_tokens: int = 40):
    """Dropdown model, Textarea prompt, temperature and top-k sliders, chat checkbox, seed, Generate -> output."""
    import ipywidgets as w

    model_box = w.Dropdown(options=list(models), description="model")
    text = w.Textarea(value=prompt, description="prompt", layout=w.Layout(width="90%", height="80px"))
    temperature = w.FloatSlider(value=0.7, min=0.0, max=1.5, step=0.05, description="temperature")
    top_k = w.IntSlider(value=0, min=0, max=50, description="top-k (0=off)")
    chat = w.Checkbox(value=True, description="chat format (uncheck to continue raw text)")
    seed = w.IntText(value=0, description="seed")
    button = w.Button(description="Generate", button_style="primary")
    out = w.Output()

    def on_click(_):
        with out:
            out.clear_output()
            try:
                print(playground_reply(models, tokenizer, model_box.value, text.value, temperature.value, top_k.value,
                                       seed.value, max_new_tokens, chat.value))
            except ValueError as e:
                print(f"⚠ {e}")

    button.on_click(on_click)
    return w.VBox([model_box, text, w.HBox([temperature, top_k]), w.HBox([chat, seed]), button, out])


# ------------------------------------------------------------------------------------------------------------------
# 2. Be the labeler (InstructGPT §3.4–3.5: rank K answers to each prompt, best first)


def _as_prompt(prompt) -> Prompt:
    if isinstance(prompt, Prompt):
        return prompt
    if isinstance(prompt, dict):
        return Prompt(**prompt)
    raise TypeError(f"a prompt must be a world Prompt (e.g. from world.prompts('val')), got {type(prompt).__name__}")


def ranking_from_ranks(ranks: list[int]) -> list[int]:
    """Turn "response k got rank ranks[k]" (1 = best) into a ranking: response indices, best first.

    [2, 1, 3] -> [1, 0, 2]. ValueError unless the ranks are 1..K, each used once.
    """
    K = len(ranks)
    if sorted(int(r) for r in ranks) != list(range(1, K + 1)):
        raise ValueError(f"ranks {list(ranks)} must use each of 1..{K} exactly once (1 = best); "
                         "two answers cannot share a rank")
    return sorted(range(K), key=lambda k: int(ranks[k]))


def pair_agreement(ranking: list[int], gold: list[float]) -> tuple[int, int]:
    """(agreeing, judged) over the pairs of one ranking whose gold scores differ (gold ties have no true order)."""
    agree = judged = 0
    for i, j in combinations(ranking, 2):  # i was ranked above j
        if gold[i] != gold[j]:
            judged += 1
            agree += gold[i] > gold[j]
    return agree, judged


class LabelingSession:
    """Sample K answers per prompt from `policy`, let the learner rank them, and store InstructGPT-style comparisons.

    Exact duplicate answers are resampled (up to `max_resamples` times) and then dropped, so a prompt may show fewer
    than K answers; a prompt with fewer than 2 distinct answers is skipped (a tie cannot be ranked).
    """

    def __init__(self, prompts, policy, tokenizer, world, k: int = 4, seed: int = 0, temperature: float = 1.0,
                 max_new_tokens: int = 24, max_resamples: int = 3, source: str = "policy"):
        if k < 2:
            raise ValueError(f"k={k}: ranking needs at least 2 answers per prompt (InstructGPT used 4 to 9)")
        if len(prompts) == 0:
            raise ValueError("no prompts to label; pass e.g. world.prompts('val')[:5]")
        self.world, self.k, self.temperature = world, k, temperature
        self.source = f"{source}@T={temperature:g}"
        generator = _generator(policy, seed)
        self.items: list[tuple[Prompt, list[str], list[bool]]] = []
        for prompt in map(_as_prompt, prompts):
            texts, ended = [], []
            for _ in range(1 + max_resamples):
                need = k - len(texts)
                for r in generate_responses(policy, tokenizer, [prompt] * need, max_new_tokens=max_new_tokens,
                                            temperature=temperature, generator=generator):
                    if (r.text, r.ended) not in zip(texts, ended):
                        texts.append(r.text)
                        ended.append(r.ended)
                if len(texts) == k:
                    break
            if len(texts) >= 2:
                self.items.append((prompt, texts, ended))
        self.position = 0                        # index of the next prompt to label
        self.comparisons: list[Comparison] = []  # what was labeled so far, in order

    def __len__(self) -> int:
        return len(self.items)

    @property
    def done(self) -> bool:
        return self.position >= len(self.items)

    def current(self) -> tuple[str, list[str]] | None:
        """(prompt text, the answers to rank), or None when every prompt is labeled."""
        if self.done:
            return None
        prompt, texts, _ = self.items[self.position]
        return prompt.text, list(texts)

    def current_ended(self) -> list[bool]:
        """For each current answer: did the model end it (EOS)? An answer cut at max_new_tokens did not."""
        return [] if self.done else list(self.items[self.position][2])

    def _store(self, ranking: list[int], labeler: dict) -> Comparison:
        prompt, texts, ended = self.items[self.position]
        gold = [float(gold_score(self.world, prompt, t, e).total) for t, e in zip(texts, ended)]
        comparison = Comparison(prompt=asdict(prompt), responses=list(texts), ended=list(ended), ranking=ranking,
                                gold=gold, sources=[self.source] * len(texts), labeler=labeler)
        self.comparisons.append(comparison)
        self.position += 1
        return comparison

    def submit(self, ranking: list[int]) -> Comparison:
        """Record the learner's ranking of the current answers (indices, BEST FIRST) and move to the next prompt."""
        if self.done:
            raise ValueError("every prompt is already labeled; save the session or start a new one")
        K = len(self.items[self.position][1])
        try:
            ranking = [int(i) for i in ranking]
        except (TypeError, ValueError):
            raise ValueError(f"a ranking is a list of answer indices, best first, e.g. {list(range(K))}") from None
        if sorted(ranking) != list(range(K)):
            raise ValueError(f"ranking {ranking} is not a permutation of range({K}): list each of the {K} answers "
                             f"exactly once, best first, e.g. {list(range(K))[::-1]}")
        return self._store(ranking, {"name": "you"})

    def auto_label(self, ranker: NoisyRanker | None = None) -> int:
        """Rank every remaining prompt with a simulated (noisy) labeler; returns how many it labeled."""
        ranker = ranker if ranker is not None else NoisyRanker(seed=0)
        n = 0
        while not self.done:
            prompt, texts, ended = self.items[self.position]
            gold = [gold_score(self.world, prompt, t, e).total for t, e in zip(texts, ended)]
            self._store([int(i) for i in ranker.rank(gold)],
                        {"name": "simulated", "temperature": ranker.temperature, "seed": ranker.seed})
            n += 1
        return n

    def agreement_with_gold(self, labeler: str | None = "you") -> float:
        """Fraction of ranked pairs ordered like the gold labeler, over comparisons by `labeler` (None = all).

        Pairs whose gold scores tie are not counted (they have no true order); NaN if no pair could be judged.
        """
        chosen = [c for c in self.comparisons if labeler is None or c.labeler.get("name") == labeler]
        if not chosen:
            raise ValueError(f"no comparisons by {labeler!r} yet; submit a ranking first")
        agree = judged = 0
        for c in chosen:
            a, j = pair_agreement(c.ranking, c.gold)
            agree, judged = agree + a, judged + j
        return agree / judged if judged else float("nan")

    def save(self, path: str | os.PathLike):
        """Write the comparisons so far as JSON Lines (comparisons.load_comparisons reads them back)."""
        if not self.comparisons:
            raise ValueError("nothing to save yet: rank at least one prompt (or call auto_label)")
        return save_comparisons(path, self.comparisons)


def labeling_fallback(session: LabelingSession) -> str:
    """Print the current prompt, its answers with their gold scores, and the gold order (changes nothing)."""
    lines = [f"[be the labeler] {session.position}/{len(session)} prompts labeled"]
    current = session.current()
    if current is None:
        lines.append("every prompt is labeled")
    else:
        prompt_text, texts = current
        prompt = session.items[session.position][0]
        ended = session.current_ended()
        gold = [gold_score(session.world, prompt, t, e).total for t, e in zip(texts, ended)]
        lines.append(f"prompt: {prompt_text}")
        for k, (t, e, g) in enumerate(zip(texts, ended, gold)):
            lines.append(f"  [{k}] gold={g:.2f} {'' if e else '(no end) '}{t!r}")
        order = sorted(range(len(texts)), key=lambda k: -gold[k])
        lines.append(f"gold order, best first: {order}")
    text = "\n".join(lines)
    print(text)
    return text


def labeling_ui(session: LabelingSession, path: str = "my_comparisons.jsonl"):
    """Prompt and K answers, one rank dropdown per answer, Submit, progress, and Save to a JSONL file."""
    import ipywidgets as w

    prompt_html = w.HTML()
    answers = w.VBox()
    progress = w.IntProgress(min=0, max=max(1, len(session)), description="labeled")
    submit = w.Button(description="Submit ranking", button_style="primary")
    path_box = w.Text(value=str(path), description="file")
    save = w.Button(description="Save")
    out = w.Output()
    dropdowns: list = []

    def refresh():
        progress.value = session.position
        current = session.current()
        if current is None:
            prompt_html.value = "<b>All prompts labeled.</b> Save them, then compare with the gold order."
            answers.children, dropdowns[:] = (), []
            submit.disabled = True
            return
        prompt_text, texts = current
        ended = session.current_ended()
        prompt_html.value = f"<b>Prompt {session.position + 1}/{len(session)}:</b> {prompt_text}"
        K = len(texts)
        dropdowns[:] = [w.Dropdown(options=list(range(1, K + 1)), value=k + 1, description="rank",
                                   layout=w.Layout(width="140px")) for k in range(K)]
        answers.children = [w.HBox([d, w.Label(f"{t}" + ("" if e else "   [no end]"))])
                            for d, t, e in zip(dropdowns, texts, ended)]

    def on_submit(_):
        with out:
            out.clear_output()
            try:
                session.submit(ranking_from_ranks([d.value for d in dropdowns]))
                print(f"saved ranking; agreement with gold so far: {session.agreement_with_gold():.0%}")
            except ValueError as e:
                print(f"⚠ {e}")
        refresh()

    def on_save(_):
        with out:
            out.clear_output()
            try:
                print(f"wrote {len(session.comparisons)} comparisons to {session.save(path_box.value)}")
            except ValueError as e:
                print(f"⚠ {e}")

    submit.on_click(on_submit)
    save.on_click(on_save)
    refresh()
    return w.VBox([prompt_html, w.HTML("<i>rank 1 = best</i>"), answers, w.HBox([submit, progress]),
                   w.HBox([path_box, save]), out])


# ------------------------------------------------------------------------------------------------------------------
# 3. The β slider: points of the reward–KL frontier (overoptimisation.json's "points", minirlhf.pipeline)

POINT_KEYS = ("beta", "kl", "rm_reward", "gold")


def sweep_point(points: list[dict], beta: float) -> dict:
    """The precomputed sweep point whose β is nearest to `beta` (the first one on a tie)."""
    if not points:
        raise ValueError("no sweep points; load them first, e.g. load_result(\"overoptimisation.json\")[\"points\"]")
    for p in points:
        missing = [key for key in POINT_KEYS if key not in p]
        if missing:
            raise ValueError(f"a sweep point lacks {missing}; each needs {list(POINT_KEYS)}")
    return dict(min(points, key=lambda p: abs(float(p["beta"]) - float(beta))))


def _nearest_examples(examples: dict | None, beta: float) -> list[str]:
    if not examples:
        return []
    return list(examples[min(examples, key=lambda b: abs(float(b) - float(beta)))])


def describe_point(point: dict, examples: list[str] | None = None) -> str:
    """The numbers of one β as text, plus a few example answers."""
    lines = [f"β = {point['beta']:g}: KL to SFT = {point['kl']:.2f} nats/seq, RM reward = {point['rm_reward']:.3f}, "
             f"gold = {point['gold']:.3f}"]
    lines += [f"  · {e}" for e in (examples or [])[:5]]
    return "\n".join(lines)


def frontier_figure(points: list[dict], beta: float):
    """plots.plot_frontier with the point nearest `beta` ringed in red on both panels."""
    from minirlhf.course.plots import plot_frontier

    point = sweep_point(points, beta)
    fig = plot_frontier(points)
    for ax, key in zip(fig.axes[:2], ("rm_reward", "gold")):
        ax.scatter([point["kl"]], [point[key]], s=160, facecolors="none", edgecolors="red", linewidths=2,
                   zorder=5, label=f"β = {point['beta']:g}")
        ax.legend(fontsize="small")
    return fig


def beta_fallback(points: list[dict], examples: dict | None = None) -> str:
    """Print every sweep point (β ascending) and, for each, its example answers if given."""
    text = "\n".join(describe_point(p, _nearest_examples(examples, p["beta"]) if examples else None)
                     for p in sorted(points, key=lambda p: p["beta"]))
    print("[β slider]\n" + text)
    return text


def beta_slider(points: list[dict], examples: dict | None = None):
    """A SelectionSlider over the swept βs; shows the point's numbers, example answers and the highlighted frontier."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    betas = sorted({float(p["beta"]) for p in points})
    if not betas:
        raise ValueError("no sweep points; load them first, e.g. load_result(\"overoptimisation.json\")[\"points\"]")
    slider = w.SelectionSlider(options=[(f"{b:g}", b) for b in betas], value=betas[len(betas) // 2], description="β")
    out = w.Output()

    def draw(change=None):
        with out:
            out.clear_output(wait=True)
            print(describe_point(sweep_point(points, slider.value), _nearest_examples(examples, slider.value)))
            fig = frontier_figure(points, slider.value)
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    return w.VBox([slider, out])


# ------------------------------------------------------------------------------------------------------------------
# 4. Chat with a model (multi-turn; old turns are trimmed by chat.chat_turn when the context fills up)


class ChatSession:
    """A multi-turn conversation with one model, seeded: the same messages give the same replies."""

    def __init__(self, model, tokenizer, temperature: float = 0.7, seed: int = 0, max_new_tokens: int = 48,
                 top_k: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.seed, self.max_new_tokens, self.top_k = temperature, seed, max_new_tokens, top_k
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and restart the random stream (so a replay gives the same replies)."""
        self.messages: list[dict] = []
        self.generator = _generator(self.model, self.seed)

    def send(self, text: str) -> str:
        """Add the user's message, sample the assistant's reply, keep both in the history; returns the reply."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the message is empty; type something to say to the model")
        reply, self.messages = chat_turn(self.model, self.tokenizer,
                                         self.messages + [{"role": "user", "content": text.strip()}],
                                         max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                         top_k=_top_k(self.top_k), generator=self.generator)
        return reply

    def transcript(self) -> str:
        names = {"user": "you", "assistant": "model"}
        return "\n".join(f"{names[m['role']]:>5}: {m['content']}" for m in self.messages)


DEFAULT_CHAT = ("what colour does kika like ?", "tell me about dema in two sentences .")


def chat_fallback(model, tokenizer, messages=DEFAULT_CHAT, temperature: float = 0.7, seed: int = 0,
                  max_new_tokens: int = 48) -> str:
    """Print a seeded conversation (a fresh ChatSession) with the given user messages; returns the transcript."""
    session = ChatSession(model, tokenizer, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
    for m in messages:
        session.send(m)
    text = session.transcript()
    print(f"[chat] temperature={temperature:g}, seed={seed}\n{text}")
    return text


def chat_ui(session_or_models, tokenizer=None, temperature: float = 0.7, seed: int = 0):
    """Text input, Send, Reset, the transcript; a model dropdown when given a dict of several models.

    session_or_models: a ChatSession, or {name: GPT} (then pass the tokenizer).
    """
    import ipywidgets as w

    if isinstance(session_or_models, ChatSession):
        models = {"model": session_or_models.model}
        state = {"session": session_or_models}
    else:
        models = dict(session_or_models)
        if not models or tokenizer is None:
            raise ValueError("chat_ui needs a ChatSession, or a non-empty {name: model} dict and the tokenizer")
        first = next(iter(models.values()))
        state = {"session": ChatSession(first, tokenizer, temperature=temperature, seed=seed)}
    text = w.Text(placeholder="ask something, e.g. what colour does kika like ?", layout=w.Layout(width="70%"))
    send = w.Button(description="Send", button_style="primary")
    reset = w.Button(description="Reset")
    out = w.Output(layout=w.Layout(border="1px solid #ccc", min_height="80px"))
    dropdown = w.Dropdown(options=list(models), description="model")

    def redraw(note: str | None = None):
        with out:
            out.clear_output()
            print(state["session"].transcript() or "(empty conversation)")
            if note:
                print(note)

    def on_send(_):
        try:
            state["session"].send(text.value)
            text.value = ""
            redraw()
        except ValueError as e:
            redraw(f"⚠ {e}")

    def on_reset(_):
        state["session"].reset()
        redraw()

    def on_model(change):
        s = state["session"]
        state["session"] = ChatSession(models[change["new"]], s.tokenizer, s.temperature, s.seed, s.max_new_tokens,
                                       s.top_k)
        redraw(f"(switched to {change['new']}; new conversation)")

    send.on_click(on_send)
    reset.on_click(on_reset)
    dropdown.observe(on_model, names="value")
    children = ([dropdown] if len(models) > 1 else []) + [w.HBox([text, send, reset]), out]
    redraw()
    return w.VBox(children)


__all__ = [
    "show", "playground_reply", "playground_fallback", "prompt_playground", "ranking_from_ranks", "pair_agreement",
    "LabelingSession", "labeling_fallback", "labeling_ui", "sweep_point", "describe_point", "frontier_figure",
    "beta_fallback", "beta_slider", "ChatSession", "chat_fallback", "chat_ui",
]
