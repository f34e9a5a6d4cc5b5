"""Exercise 09 — win rate against a baseline (InstructGPT's headline metric: how often labelers prefer the model).

For each prompt compare the two answers' scores: a win counts 1, a tie ½, a loss 0; average over prompts.

Check: minirlhf.course.exercises.check_win_rate(win_rate)
"""


def win_rate(scores: list[float], baseline: list[float]) -> float:
    points = 0.0
    for mine, theirs in zip(scores, baseline):
        if mine > theirs:
            points += 1.0
        elif mine == theirs:
            points += 0.5
    return points / len(scores)
