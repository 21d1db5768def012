"""How good are the PRM's training labels? Each step signal scored as if it were a PRM.

    python -m experiments.label_quality [--n 1000] [--seed 0] [--quick]

The PRM learns from step labels: three signals per thinking step — alignment, quality,
coherence — fused by a softmax over their own values (ReasonFlux-PRM, arXiv 2506.18896, the
step-level reward). Before training
anything, this asks whether those labels mark the wrong steps at all. It labels `--n` world
traces the way `train_prm.py` does (no rollouts: the trajectory reward plays no part in step
labels) and scores every signal against the traces' hidden first wrong step: first-error F1
(ProcessBench's harmonic mean of accuracy on flawed and on flawless traces) and step AUC, with
the best threshold on these same traces, so the figures are each signal's ceiling. Then the
mean fused label of sound steps, first wrong steps and the steps after them, per teacher.

The quality signal is the built-in world's exact step judge: an oracle a real user would not
have (they would use an LLM judge, `rfprm.judges`). The fused row is what training sees.
"""
import argparse
import statistics

from rfprm import world
from rfprm.errors import RfprmError, cli_main
from rfprm.evaluate import choose_threshold, evaluate_scores
from rfprm.world.task import world_labeller
from rfprm.prm_train import hide_eval_fields

SIGNALS = ("fused", "quality", "alignment", "coherence")


def signal_scores(labelled: list[dict], signal: str) -> list[list[float]]:
    """Per trace, one score per thinking step from one signal (or the fused label)."""
    return [r["step_rewards"] if signal == "fused" else r["label_parts"][signal] for r in labelled]


def mean_by_position(records: list[dict], labelled: list[dict], teacher: str) -> tuple[list, list, list]:
    """The fused labels of one teacher's traces: sound steps, first wrong steps, steps after one."""
    sound, first, after = [], [], []
    for rec, lab in zip(records, labelled):
        if rec["teacher"] != teacher:
            continue
        f, s = rec["first_error"], lab["step_rewards"]
        sound += s[:len(s) if f < 0 else f]
        if f >= 0:
            first.append(s[f])
            after += s[f + 1:]
    return sound, first, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="world traces to label (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the traces (default 0)")
    ap.add_argument("--quick", action="store_true", help="100 traces: a few seconds, for the tests")
    args = ap.parse_args()
    n = 100 if args.quick else args.n
    if n < 10:
        raise RfprmError(f"--n {n}: need at least 10 traces")
    records = world.make_traces(n, args.seed)
    labelled = world_labeller(None)(hide_eval_fields(records), progress=True)
    first_errors = [r["first_error"] for r in records]
    print(f"{n} traces, seed {args.seed}: each signal as a PRM (threshold chosen on these traces)")
    for signal in SIGNALS:
        scores = signal_scores(labelled, signal)
        res = evaluate_scores(scores, first_errors, choose_threshold(scores, first_errors))
        print(f"{signal:<10} F1 {res['f1']:5.1f}  AUC {res['auc']:5.1f}  threshold {res['threshold']:.3f}")
    show = lambda xs: f"{statistics.fmean(xs):.2f}" if xs else "  - "
    print("mean fused label by step position")
    for teacher in world.TEACHERS:
        sound, first, after = mean_by_position(records, labelled, teacher)
        print(f"{teacher:<11} sound {show(sound)}  first error {show(first)}  after it {show(after)}")


if __name__ == "__main__":
    cli_main(main)
