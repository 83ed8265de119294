"""A reward function of your own, for `spro train` run in this folder (README: "Your model and data").

TRL's convention: fn(prompts, completions, **columns) -> one float (or None: cannot be scored) per
completion; `answer` is the dataset's answer column, and other columns arrive the same way.
"""

import re


def exact_match(prompts, completions, answer, **columns):
    """1.0 when the first integer of the completion is the answer, else 0.0."""
    scores = []
    for completion, truth in zip(completions, answer):
        found = re.search(r"-?\d+", completion)
        scores.append(float(found is not None and found.group(0) == str(truth).strip()))
    return scores
