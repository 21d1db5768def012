"""Diagnostic for issue #6: how much can a student from tiny-base learn in select_data.py's budget?

    python experiments/student_budget.py STEPS LR K [BATCH]    # e.g. 400 2e-3 1000 (the select_data.py defaults)

Fine-tunes students from tiny-base on K traces of a world pool (2,500 traces, more when K
clean ones need it) -- only clean ones, a random draw, only sloppy ones (when the pool holds
K) -- with rfprm.selection's student recipe, and prints each
student's greedy accuracy on 200 reserved evaluation problems. If even the clean-only student
is near zero, the student comparison cannot show what a selection is worth. Not a test.
"""
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.recipes import eval_problems, held_out_texts  # noqa: E402
from rfprm.selection import StudentSpec, student_accuracy  # noqa: E402

torch.set_num_threads(1)
steps, lr, k = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 16
base, tok = rfprm.load_model("tiny-base"), rfprm.load_tokenizer("tiny-base")
pool = world.make_traces(max(2500, int(k / 0.35) + 50), 0, exclude=held_out_texts())  # k clean ones at least
problems = [(p.text, str(p.answer)) for p in eval_problems(200)]
spec = StudentSpec(steps=steps, lr=lr, batch_size=batch)
for name, records in [("clean", [r for r in pool if r["teacher"] == "clean"][:k]),
                      ("random", random.Random(0).sample(pool, k)),
                      ("sloppy", [r for r in pool if r["teacher"] == "sloppy"][:k])]:
    if len(records) < k:
        print(f"{name:<7} skipped: the pool holds only {len(records)} such traces", flush=True)
        continue
    t = time.time()
    acc = student_accuracy(base, tok, records, problems, spec, seed=0)
    print(f"{name:<7} steps {steps} lr {lr:g} k {k} batch {batch}: accuracy {100 * acc:.1f}% "
          f"({time.time() - t:.0f} s)", flush=True)
