"""Diagnostic for issue #6: which slips does the PRM see, and does its backbone know better?

    python experiments/digit_probe.py [PRM ...]        # default tiny-prm

Takes clean teacher traces on held-out problems and slips their *last* step's result, in the
thinking and in the response alike (as the sloppy teacher and the policy do): by one in the
units digit (result ± 1) or by one in the tens digit (result ± 10; only where the number of
digits stays the same; answers of two digits only, so the tens digit is the leading one). For each PRM it prints
- the mean score of that last step, untouched and under each slip, and the step AUC of the
  untouched step against each kind of slip;
- its backbone's own next-token probability (the tied embeddings as an LM head, which the
  auxiliary LM loss trains) of the *right* leading digit at the thinking's `= ` before the
  written result, for the tens slips: whether the backbone still knows the right digit where
  the PRM's step head misses the slip.
Not a test.
"""
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm.evaluate import auc  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.recipes import held_out_texts  # noqa: E402

torch.set_num_threads(1)
N = 600


def slipped(rec: dict, new: int) -> dict:
    """The trace with its last step's result (the answer) written as `new` in both parts."""
    old = rec["answer"]
    steps, resp = rec["trajectory"].split("\n\n"), rec["response"].split("\n\n")
    assert steps[-1].endswith(f"= {old}.") and resp[-1].endswith(f"gives {old}, so the answer is \\boxed{{{old}}}")
    steps[-1] = steps[-1][: -len(f"{old}.")] + f"{new}."
    resp[-1] = resp[-1].replace(f"gives {old},", f"gives {new},").replace(f"\\boxed{{{old}}}", f"\\boxed{{{new}}}")
    return {**rec, "trajectory": "\n\n".join(steps), "response": "\n\n".join(resp)}


rng = random.Random(0)
base = world.make_traces(N, 77, mix={"clean": 1.0}, exclude=held_out_texts())
cases = {"right": [], "units ±1": [], "tens ±10": []}
for rec in base:
    v = int(rec["answer"])
    units = [u for u in (v - 1, v + 1) if u >= 1 and len(str(u)) == len(str(v))]
    tens = [t for t in (v - 10, v + 10) if t >= 1 and len(str(t)) == len(str(v))]
    if not 10 <= v <= 99 or not units or not tens:
        continue
    cases["right"].append(rec)
    cases["units ±1"].append(slipped(rec, rng.choice(units)))
    cases["tens ±10"].append(slipped(rec, rng.choice(tens)))
print(f"{len(cases['right'])} clean held-out traces with a two-digit answer")

for path in sys.argv[1:] or ["tiny-prm"]:
    prm = rfprm.load_prm(path)
    last = {k: [s.steps[-1] for s in prm.score_batch(v, batch_size=32)] for k, v in cases.items()}
    print(f"\n{path}: mean score of the last step (threshold {prm.threshold:.3f})")
    for k, v in last.items():
        extra = "" if k == "right" else f"   AUC right vs this slip {auc(last['right'], v):.3f}"
        print(f"  {k:<9} {np.mean(v):.3f}   below threshold {np.mean(np.array(v) < prm.threshold):5.1%}{extra}")
    # the backbone's prediction of the leading digit where the tens slip was written
    eq = prm.tok.encode(" =")
    probs = []
    with torch.no_grad():
        for rec in cases["tens ±10"]:
            ex = prm.examples([rec])[0]
            ids = list(ex.ids)
            # the last " =" of the input is the last thinking step's; its next token is " ", then the digits
            at = max(i for i in range(len(ids) - len(eq)) if ids[i:i + len(eq)] == eq) + len(eq)
            h = prm.model(torch.tensor([ids[:at + 1]]))[0, -1]
            p = (h @ prm.model.embed_tokens.weight.T).softmax(-1)
            right = prm.tok.encode(rec["answer"][0])[0]
            written = ids[at + 1]
            probs.append((p[right].item(), p[written].item()))
    probs = np.array(probs)
    print(f"  tens slips: the backbone's probability of the right leading digit {probs[:, 0].mean():.3f}, "
          f"of the written (wrong) one {probs[:, 1].mean():.3f}")
