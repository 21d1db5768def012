"""Which arithmetic slips does a PRM see, and does its backbone know better than its step head?

    python -m experiments.digit_probe [--prm tiny-prm ...] [--quick]

Takes clean teacher traces on held-out problems with a two-digit answer and slips the result
of their *last* step, in the thinking and in the response alike (as the sloppy teacher and the
policy do): by one in the units digit (result ± 1) or by one in the tens digit (result ± 10,
the leading digit here). For each PRM it prints
- the mean score of that last step, untouched and under each slip, the share below the PRM's
  threshold, and the step AUC of the untouched step against each kind of slip;
- its backbone's own next-token probability (the tied embeddings read as an LM head, which the
  PRM's auxiliary LM loss keeps trained) of the *right* and of the *written* leading digit at
  the `= ` before a tens slip: whether the backbone knows the right digit where the step head
  misses the slip.

Built on the world's step format (`a op b = c`): a diagnostic of the built-in world.
"""
import argparse
import random

import numpy as np
import torch

import rfprm
from rfprm import world
from rfprm.errors import RfprmError, cli_main
from rfprm.evaluate import auc
from rfprm.world.task import held_out_texts

SLIPS = ("right", "units ±1", "tens ±10")


def slipped(rec: dict, new: int) -> dict:
    """The trace with its last step's result (the answer) written as `new` in both parts."""
    old = rec["answer"]
    steps, resp = rec["trajectory"].split("\n\n"), rec["response"].split("\n\n")
    if not (steps[-1].endswith(f"= {old}.") and resp[-1].endswith(f"\\boxed{{{old}}}")):
        raise RfprmError(f"trace of {rec['problem']!r} is not in the world's step format")
    steps[-1] = steps[-1][: -len(f"{old}.")] + f"{new}."
    resp[-1] = resp[-1].replace(f"gives {old},", f"gives {new},").replace(f"\\boxed{{{old}}}", f"\\boxed{{{new}}}")
    return {**rec, "trajectory": "\n\n".join(steps), "response": "\n\n".join(resp)}


def slip_cases(n: int, seed: int = 0) -> dict[str, list[dict]]:
    """Clean held-out traces with a two-digit answer, untouched and with each slip."""
    rng = random.Random(seed)
    cases = {k: [] for k in SLIPS}
    for rec in world.make_traces(n, 77, mix={"clean": 1.0}, exclude=held_out_texts()):
        v = int(rec["answer"])
        units = [u for u in (v - 1, v + 1) if len(str(u)) == len(str(v))]
        tens = [t for t in (v - 10, v + 10) if len(str(t)) == len(str(v))]
        if not 10 <= v <= 99 or not units or not tens:
            continue
        cases["right"].append(rec)
        cases["units ±1"].append(slipped(rec, rng.choice(units)))
        cases["tens ±10"].append(slipped(rec, rng.choice(tens)))
    return cases


def leading_digit_probs(prm, records: list[dict]) -> np.ndarray:
    """(n, 2): the backbone's probability of the right and of the written leading digit,
    read at the last thinking step's `= ` (the token before the digits)."""
    eq = prm.tok.encode(" =")
    probs = []
    with torch.no_grad():
        for rec in records:
            ids = list(prm.examples([rec])[0].ids)
            at = max(i for i in range(len(ids) - len(eq)) if ids[i:i + len(eq)] == eq) + len(eq)
            h = prm.model(torch.tensor([ids[:at + 1]]))[0, -1]       # (hidden,)
            p = (h @ prm.model.embed_tokens.weight.T).softmax(-1)    # (vocab,)
            right = prm.tok.encode(rec["answer"][0])[0]
            probs.append((p[right].item(), p[ids[at + 1]].item()))
    return np.array(probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prm", nargs="+", default=["tiny-prm"], help="PRM directories or shipped names")
    ap.add_argument("--n", type=int, default=600, help="clean traces drawn before keeping two-digit answers")
    ap.add_argument("--quick", action="store_true", help="60 traces, for the tests")
    args = ap.parse_args()
    torch.set_num_threads(1)
    prms = {path: rfprm.load_prm(path) for path in args.prm}  # a bad path fails before any work
    cases = slip_cases(60 if args.quick else args.n)
    print(f"{len(cases['right'])} clean held-out traces with a two-digit answer")
    for path, prm in prms.items():
        last = {k: [s.steps[-1] for s in prm.score_batch(v, batch_size=32)] for k, v in cases.items()}
        print(f"\n{path}: mean score of the last step (threshold {prm.threshold:.3f})")
        for k, v in last.items():
            extra = "" if k == "right" else f"   AUC right vs this slip {auc(last['right'], v):.3f}"
            print(f"  {k:<9} {np.mean(v):.3f}   below threshold {np.mean(np.array(v) < prm.threshold):5.1%}{extra}")
        probs = leading_digit_probs(prm, cases["tens ±10"])
        print(f"  tens slips: the backbone's probability of the right leading digit {probs[:, 0].mean():.3f}, "
              f"of the written (wrong) one {probs[:, 1].mean():.3f}")


if __name__ == "__main__":
    cli_main(main)
