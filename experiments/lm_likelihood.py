"""Diagnostic for issue #5: does the policy itself know which steps are wrong?

    python experiments/lm_likelihood.py [MODEL]        # default tiny-policy

Scores every thinking step of held-out world traces by the policy's own log-probability of the
result it wrote (teacher-forced in the chat format; the minimum over the result's digit
tokens), with no training at all, in two orders: the policy's own (thinking, then response)
and that of the PRM's rfprm layout (response first). The threshold is chosen on 200
validation traces, F1 and step AUC measured on 400 test traces (none on a problem the policy
trained on), as train_prm.py does. If this scorer separates the steps, the knowledge is in the
backbone and the difficulty is reading it at the PRM's `<extra_0>` markers: a causal model
forms its prediction of a digit in its last layer at the position *before* the digit, where no
later position can attend to it. In the response-first order the slip has already been
written once (in the response) when the thinking repeats it, so it surprises the model less.
Not a test.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm  # noqa: E402
from rfprm import world  # noqa: E402
from rfprm.evaluate import choose_threshold, evaluate_scores  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else "tiny-policy"
model, tok = rfprm.load_model(path), rfprm.load_tokenizer(path)
# traces on problems the shipped policy never trained on (its recipe draws 30,000 with seed 1)
from rfprm.recipes import held_out_texts  # noqa: E402
seen = held_out_texts() | {p.text for p in world.make_problems(30000, 1, exclude=held_out_texts())}
val = world.make_traces(200, 2, exclude=seen)
test = world.make_traces(400, 3, exclude=seen | {r["problem"] for r in val})
EQ = tok.encode(" =")[0]


def render(r, order):
    """The assistant text: the policy's own format (thinking first), or the order of the PRM's
    rfprm layout (response first, then the thinking; no markers: the policy never saw them)."""
    if order == "thinking-first":
        return world.format_trace(r["trajectory"], r["response"])
    return r["response"].strip() + "\n\n<think>\n" + "\n\n".join(world.split_steps(r["trajectory"]))


def step_scores(records, order):
    out = []
    for r in records:
        prompt = tok.chat([{"role": "user", "content": r["problem"]}], add_generation_prompt=True)
        ids = prompt + tok.encode(render(r, order))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
        n_steps = len(world.split_steps(r["trajectory"]))
        scores, j = [], len(prompt)
        while len(scores) < n_steps and j < len(ids):   # each " = " of the thinking, in order
            if ids[j] == EQ:                             # (the response writes "gives", not "=")
                k, digits = j + 2, []                    # skip " =" and " "
                while k < len(ids) and tok.decode([ids[k]]).isdigit():
                    digits.append(logp[k - 1, ids[k]].item())
                    k += 1
                scores.append(min(digits))
                j = k
            else:
                j += 1
        out.append(scores + [0.0] * (n_steps - len(scores)))
    return out


for order in ("thinking-first", "response-first"):
    sv, st = step_scores(val, order), step_scores(test, order)
    th = choose_threshold(sv, [r["first_error"] for r in val])
    res = evaluate_scores(st, [r["first_error"] for r in test], th)
    print(f"{order}: F1 {res['f1']:.1f}  flawed {res['flawed_acc']:.1f}  flawless {res['flawless_acc']:.1f}  "
          f"AUC {res['auc']:.1f}  threshold {th:.2f}")
