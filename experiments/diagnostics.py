"""Helpers shared by the Best-of-N diagnostics: how a wrong sample first goes wrong, and how
well a score ranks the samples of one problem."""
import re

from rfprm.bon import split_completion
from rfprm.evaluate import auc
from rfprm.world import split_steps
from rfprm.world.judge import USEFUL, WRONG, judge_steps


def first_mistake(problem: str, completion: str) -> str:
    """How a wrong sample first goes wrong, by the world's step judge."""
    trace = split_completion(completion)
    if trace is None:
        return "does not parse"
    steps = split_steps(trace[0])
    for step, q in zip(steps, judge_steps(problem, steps)):
        if q == WRONG:
            m = re.search(r"(\d+) ([-+*]) (\d+) = (\d+)", step)
            if not m:
                return "wrong result, unparsed"
            a, op, b, written = int(m[1]), m[2], int(m[3]), int(m[4])
            true = a + b if op == "+" else a - b if op == "-" else a * b
            if written // 10 == true // 10:
                return "wrong result, units digit"
            if (written - true) % 10 == 0:
                return "wrong result, off by tens"
            return "wrong result, otherwise"
        if q < USEFUL:
            return "no progress"
    return "sound thinking"


def within_problem_auc(groups) -> float:
    """AUC of right over wrong samples counted within each problem only (all Best-of-N can use):
    `groups` holds (right scores, wrong scores) per problem; each problem weighs by its pairs."""
    wins = pairs = 0.0
    for right, wrong in groups:
        if right and wrong:
            wins += auc(right, wrong) * len(right) * len(wrong)
            pairs += len(right) * len(wrong)
    return wins / pairs if pairs else float("nan")
