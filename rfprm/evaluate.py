"""How a PRM is judged: ProcessBench-style first-error F1, step AUC, and scores per teacher.

- ProcessBench (Qwen): a PRM predicts the earliest wrong step of a solution as the first step it
  scores below its threshold (-1 when none is). Accuracy is measured separately on flawed
  traces (the predicted index must equal the true one) and on flawless traces (must predict
  -1); F1 is their harmonic mean, in percent.
- Step AUC: the probability that a sound step scores above a wrong one. Only steps before the
  first error (sound) and the first-error step itself (wrong) are used: what follows a first
  error is not labelled in ProcessBench and may be right or wrong.
- The threshold is a property of the PRM, chosen on a validation split to maximise F1 and
  stored with the checkpoint; fused labels put even wrong steps well above 0 (softmax
  weighting of the three signals, arXiv 2506.18896), so 0.5 need not be the boundary.
- `python -m rfprm.evaluate processbench FILE... --prm DIR [--json PATH]` runs this on the
  official ProcessBench JSONL files: accuracy on flawed (error_acc) and on correct solutions
  (correct_acc) and F1 per file, and the unweighted mean F1 over files.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from .errors import RfprmError, atomic_file, check_writable, cli_main


def first_below(step_scores: list[float], threshold: float) -> int:
    return next((t for t, s in enumerate(step_scores) if s < threshold), -1)


def processbench_f1(predicted: list[int], truth: list[int]) -> dict:
    """-> {"flawed_acc", "flawless_acc", "f1"} in percent (0 where a class is absent)."""
    flawed = [(p, t) for p, t in zip(predicted, truth) if t >= 0]
    flawless = [p for p, t in zip(predicted, truth) if t < 0]
    acc_flawed = 100.0 * sum(p == t for p, t in flawed) / len(flawed) if flawed else 0.0
    acc_flawless = 100.0 * sum(p == -1 for p in flawless) / len(flawless) if flawless else 0.0
    f1 = (2 * acc_flawed * acc_flawless / (acc_flawed + acc_flawless)) if acc_flawed + acc_flawless else 0.0
    return {"flawed_acc": acc_flawed, "flawless_acc": acc_flawless, "f1": f1}


def auc(positive: list[float], negative: list[float]) -> float:
    """Mann-Whitney AUC: the chance that a random positive scores above a random negative, ties
    counting one half (nan when either side is empty)."""
    if not positive or not negative:
        return float("nan")
    ranked = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    # average ranks over ties, then the rank-sum formula
    ranks, i = [0.0] * len(ranked), 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, (_, is_positive) in zip(ranks, ranked) if is_positive)
    n1, n0 = len(positive), len(negative)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def step_auc(step_scores: list[list[float]], first_errors: list[int]) -> float:
    """AUC of sound steps (before the first error) over first-error steps."""
    sound, wrong = [], []
    for scores, fe in zip(step_scores, first_errors):
        end = len(scores) if fe < 0 else fe
        sound += scores[:end]
        if 0 <= fe < len(scores):
            wrong.append(scores[fe])
    return auc(sound, wrong)


def choose_threshold(step_scores: list[list[float]], first_errors: list[int]) -> float:
    """The threshold with the best ProcessBench F1 on these traces (ties: the one nearest 0.5).
    Candidates are midpoints between consecutive distinct scores, so every split is tried."""
    values = sorted({s for scores in step_scores for s in scores})
    candidates = [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    if values:
        candidates += [values[0] - 1e-6, values[-1] + 1e-6]
    best = max(candidates, key=lambda th: (processbench_f1([first_below(s, th) for s in step_scores],
                                                           first_errors)["f1"], -abs(th - 0.5)))
    return float(best)


def evaluate_scores(step_scores: list[list[float]], first_errors: list[int], threshold: float) -> dict:
    pb = processbench_f1([first_below(s, threshold) for s in step_scores], first_errors)
    return {**pb, "auc": 100.0 * step_auc(step_scores, first_errors), "threshold": threshold}


def by_group(values: list[float], groups: list[str]) -> dict[str, dict]:
    """Mean, spread and count of `values` per group (e.g. the PRM's total score per teacher)."""
    out = {}
    for g in sorted(set(groups)):
        vs = [v for v, gg in zip(values, groups) if gg == g]
        out[g] = {"mean": statistics.fmean(vs), "std": statistics.pstdev(vs), "n": len(vs)}
    return out


# ---- ProcessBench files (Zheng et al. 2024; the paper's Table 1 protocol, arXiv 2506.18896 Sec. 5) ----
# One JSON object per line: id, generator, problem, steps (list of str), label (index of the
# first wrong step, -1 if none), final_answer_correct. A solution has no separate thinking and
# response, so every step is scored as a thinking step, and the last step (the one holding the
# final answer) is also the response the 'rfprm' layout conditions on. A step is one paragraph
# in the file; a blank line inside one is folded to a newline so it stays one scored step.
PROCESSBENCH_FIELDS = ("id", "generator", "problem", "steps", "label", "final_answer_correct")


def read_processbench(path) -> list[dict]:
    """Read and check one ProcessBench JSONL file; bad lines raise RfprmError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise RfprmError(f"{path}: no such ProcessBench file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RfprmError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise RfprmError(f"{where}: expected a JSON object with {', '.join(PROCESSBENCH_FIELDS)}")
        missing = [k for k in PROCESSBENCH_FIELDS if k not in row]
        if missing:
            raise RfprmError(f"{where}: missing field {missing[0]!r} (ProcessBench rows have "
                             f"{', '.join(PROCESSBENCH_FIELDS)})")
        steps, label = row["steps"], row["label"]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            raise RfprmError(f"{where}: steps must be a non-empty list of non-empty strings")
        if not isinstance(row["problem"], str) or not row["problem"].strip():
            raise RfprmError(f"{where}: problem must be a non-empty string")
        if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < len(steps):
            raise RfprmError(f"{where}: label {label!r} is out of range: expected -1 (no wrong step) "
                             f"or a step index 0..{len(steps) - 1}")
        rows.append(row)
    if not rows:
        raise RfprmError(f"{path}: no ProcessBench rows")
    return rows


def processbench_record(row: dict) -> dict:
    """A ProcessBench row as a trace for `PRM.score_batch`: one scored step per listed step."""
    steps = [re.sub(r"\n\s*\n", "\n", s.strip()) for s in row["steps"]]
    return {"problem": row["problem"], "trajectory": "\n\n".join(steps), "response": steps[-1]}


def processbench_scores(rows: list[dict], step_scores: list[list[float]], threshold: float) -> dict:
    """-> {"error_acc", "correct_acc", "f1"} (percent) of one file, given each row's step scores."""
    for row, scores in zip(rows, step_scores):
        if len(scores) != len(row["steps"]):
            raise RfprmError(f"ProcessBench id {row['id']}: {len(scores)} step scores for "
                             f"{len(row['steps'])} steps")
    pb = processbench_f1([first_below(s, threshold) for s in step_scores], [r["label"] for r in rows])
    return {"error_acc": pb["flawed_acc"], "correct_acc": pb["flawless_acc"], "f1": pb["f1"]}


def processbench_report(files: dict[str, list[dict]], score_steps, threshold: float) -> dict:
    """files: {name: rows}; score_steps(records) -> step scores per record (one PRM pass per
    solution). -> {"files": {name: scores}, "average_f1"}: the unweighted mean over files, as
    the official table averages its four splits."""
    per_file = {name: processbench_scores(rows, score_steps([processbench_record(r) for r in rows]), threshold)
                for name, rows in files.items()}
    return {"files": per_file, "average_f1": statistics.fmean(v["f1"] for v in per_file.values())}


def _file_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rfprm.evaluate",
                                     description="Judge a PRM on benchmark files.")
    sub = parser.add_subparsers(dest="command", required=True)
    pb = sub.add_parser("processbench", help="error/correct accuracy and F1 on ProcessBench JSONL files")
    pb.add_argument("files", nargs="+", help="ProcessBench JSONL files (e.g. gsm8k.jsonl math.jsonl ...)")
    pb.add_argument("--prm", required=True, help="PRM checkpoint directory or shipped name")
    pb.add_argument("--threshold", type=float, default=None,
                    help="first step scored below this is the predicted error (default: the PRM's own)")
    pb.add_argument("--layout", choices=("rfprm", "qwen"), default=None,
                    help="read the PRM in this layout instead of its stored one")
    pb.add_argument("--batch-size", type=int, default=8, help="solutions per forward pass")
    pb.add_argument("--device", default="cpu")
    pb.add_argument("--json", default=None, help="write the results here as JSON (percent)")
    args = parser.parse_args(argv)
    if args.json:
        check_writable(args.json)
    files = dict(zip(_file_names(args.files), (read_processbench(f) for f in args.files)))
    from .prm import load_prm  # the metrics above need no model; only the command loads one
    prm = load_prm(args.prm, device=args.device, layout=args.layout)
    if prm.head != "step":
        raise RfprmError(f"{args.prm}: a scalar-head PRM gives no step scores; ProcessBench needs a step head")
    threshold = prm.threshold if args.threshold is None else args.threshold
    score_steps = lambda records: [s.steps for s in prm.score_batch(records, args.batch_size, progress=True)]
    report = processbench_report(files, score_steps, threshold)
    print(f"{'file':<20} {'error_acc':>9} {'correct_acc':>11} {'F1':>6}   (threshold {threshold:.4g})")
    for name, r in report["files"].items():
        print(f"{name:<20} {r['error_acc']:9.1f} {r['correct_acc']:11.1f} {r['f1']:6.1f}")
    print(f"{'average F1':<20} {'':>9} {'':>11} {report['average_f1']:6.1f}")
    if args.json:
        with atomic_file(args.json) as f:
            json.dump({**report, "threshold": threshold}, f, indent=1)
    return 0


if __name__ == "__main__":
    cli_main(main)
