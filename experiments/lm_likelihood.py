"""Does the policy itself know which steps are wrong? A PRM with no training at all.

    python -m experiments.lm_likelihood [--model tiny-policy] [--quick]

Scores every thinking step of held-out world traces by the policy's own log-probability of the
result it wrote (teacher-forced in the chat format; the minimum over the result's digit
tokens), in two orders: the policy's own (thinking, then response) and that of rfprm's PRM
layout (response first, `rfprm.prm_layout`). The threshold is chosen on 200 validation traces,
first-error F1 and step AUC measured on 400 test traces (none on a problem the policy trained
on), as `train_prm.py` evaluates a PRM. It is the baseline a trained PRM must beat, and a
probe of where the knowledge sits: a causal model forms its prediction of a digit at the
position *before* the digit, and in the response-first order the slip has already been
written once (in the response) when the thinking repeats it, so it surprises the model less.

Reads world traces by the world's `a op b = c` step format: a diagnostic of the built-in world.
"""
import argparse

import torch

import rfprm
from rfprm import world
from rfprm.answers import format_trace
from rfprm.errors import cli_main
from rfprm.evaluate import choose_threshold, evaluate_scores
from rfprm.world.task import held_out_texts
from rfprm.steps import split_steps

ORDERS = ("thinking-first", "response-first")


def held_out_traces(n_val: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """Validation and test traces on problems the shipped policy never trained on
    (its recipe draws 30,000 problems with seed 1, after the reserved evaluation problems)."""
    seen = held_out_texts() | {p.text for p in world.make_problems(30000, 1, exclude=held_out_texts())}
    val = world.make_traces(n_val, 2, exclude=seen)
    test = world.make_traces(n_test, 3, exclude=seen | {r["problem"] for r in val})
    return val, test


def render(rec: dict, order: str) -> str:
    """The assistant text: the policy's own format (thinking first), or the PRM layout's order
    (response first, then the thinking; no step markers: the policy never saw them)."""
    if order == "thinking-first":
        return format_trace(rec["trajectory"], rec["response"])
    return rec["response"].strip() + "\n\n<think>\n" + "\n\n".join(split_steps(rec["trajectory"]))


def step_scores(model, tok, records: list[dict], order: str) -> list[list[float]]:
    """Per trace, per thinking step: min over the written result's digits of log p(digit)."""
    eq = tok.encode(" =")[0]
    out = []
    for rec in records:
        prompt = tok.chat([{"role": "user", "content": rec["problem"]}], add_generation_prompt=True)
        ids = prompt + tok.encode(render(rec, order))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)  # (T, vocab)
        n_steps = len(split_steps(rec["trajectory"]))
        scores, j = [], len(prompt)
        while len(scores) < n_steps and j < len(ids):   # each " = " of the thinking, in order
            if ids[j] == eq:                             # (the response writes "gives", not "=")
                k, digits = j + 2, []                    # skip " =" and " "
                while k < len(ids) and tok.decode([ids[k]]).isdigit():
                    digits.append(logp[k - 1, ids[k]].item())
                    k += 1
                scores.append(min(digits) if digits else 0.0)
                j = k
            else:
                j += 1
        out.append(scores + [0.0] * (n_steps - len(scores)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-policy", help="the policy (default tiny-policy)")
    ap.add_argument("--quick", action="store_true", help="20 validation and 40 test traces, for the tests")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = rfprm.load_model(args.model), rfprm.load_tokenizer(args.model)
    val, test = held_out_traces(*((20, 40) if args.quick else (200, 400)))
    for order in ORDERS:
        sv, st = step_scores(model, tok, val, order), step_scores(model, tok, test, order)
        th = choose_threshold(sv, [r["first_error"] for r in val])
        res = evaluate_scores(st, [r["first_error"] for r in test], th)
        print(f"{order}: F1 {res['f1']:.1f}  flawed {res['flawed_acc']:.1f}  flawless {res['flawless_acc']:.1f}  "
              f"AUC {res['auc']:.1f}  threshold {th:.2f}")


if __name__ == "__main__":
    cli_main(main)
