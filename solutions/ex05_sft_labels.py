"""Exercise 05 — SFT labels (InstructGPT §3.5 step 1): learn to ANSWER, not to write prompts.

The input is ids = prompt_ids + response_ids (the response ends with EOS when it finished). The model's output at
position t predicts token t + 1, so labels[t] = ids[t + 1] when that token belongs to the response, else −100
(ignored by the loss). The last prompt position therefore predicts the first response token.

Check: minirlhf.course.exercises.check_sft_labels(sft_labels)
"""


def sft_labels(prompt_ids: list[int], response_ids: list[int]) -> list[int]:
    ids = list(prompt_ids) + list(response_ids)
    labels = []
    for t in range(len(ids)):
        next_is_response = len(prompt_ids) <= t + 1 < len(ids)  # token t+1 exists and is part of the answer
        labels.append(ids[t + 1] if next_is_response else -100)
    return labels
