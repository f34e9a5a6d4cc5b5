"""Exercise 04 — a GPT-3 few-shot prompt (Brown et al. 2020) in the toy world's "game" format.

    game :
    bobo red
    kiki blue
    bobo               <- the model continues with " red"

Check: minirlhf.course.exercises.check_few_shot_prompt(few_shot_prompt)
"""


def few_shot_prompt(examples: list[tuple[str, str]], query_key: str) -> str:
    """The header, one 'key value' line per solved example, then the query key alone, with no trailing space."""
    lines = ["game :"]  # minirlhf.world.PATTERN_HEADER
    for key, value in examples:
        lines.append(f"{key} {value}")
    # No space after the query key: byte-level BPE folds the space into the answer's token (" red"),
    # which is what the model predicts.
    lines.append(query_key)
    return "\n".join(lines)
