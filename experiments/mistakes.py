"""The first mistake of a wrong Best-of-N sample, by the world's step judge (for the diagnostics)."""
import re

from rfprm.bon import split_completion
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
