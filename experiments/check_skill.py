"""Diagnostic for issue #5: did a policy trained with step-checking examples learn to check?

    python -m rfprm.recipes tiny-policy --check-share 0.3 --steps 2000 --out /tmp/checker
    python experiments/check_skill.py /tmp/checker

Teacher-forces the check format of `rfprm.recipes.check_example` on 300 mixed-teacher traces
and prints a confusion table of the verdict's first letter: true verdict -> the model's
greedy choice (r = right, w = wrong, u = useless, c = unclear). Not a test.
"""
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.recipes import check_example  # noqa: E402
from rfprm.sft import IGNORE  # noqa: E402

model, tok = rfprm.load_model(sys.argv[1]), rfprm.load_tokenizer(sys.argv[1])
confusion = Counter()
for record in world.make_traces(300, 777):
    prompt, ids, labels = check_example(tok, record)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids]))[0]
    for j in range(1, len(labels)):
        # a verdict's first letter: a target right after the target " " (the space before the word)
        if labels[j] != IGNORE and labels[j - 1] != IGNORE and tok.decode([ids[j - 1]]) == " ":
            guess = logits[len(prompt) + j - 1].argmax().item()
            confusion[(tok.decode([labels[j]]), tok.decode([guess]))] += 1
for truth in sorted({t for t, _ in confusion}):
    row = {g: n for (t, g), n in confusion.items() if t == truth}
    print(f"true {truth}: " + ", ".join(f"called {g}: {n}" for g, n in sorted(row.items())))
