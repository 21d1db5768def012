"""The world's checkers: final answers, and a step judge standing in for the paper's GPT-4o.

ReasonFlux-PRM's step "quality" label comes from an LLM judge rating each thinking step for
soundness, consistency and progress given the problem and the earlier steps. In the built-in
world that judgement can be made exactly, so `judge_step` is a small symbolic checker.
Notable choices:

- A step is read by finding `a op b = c` in it (also `a op b gives c`, the response's
  phrasing), tolerating any words around it. A step with several equations is judged on each
  in turn and gets the lowest score.
- Scores, one per outcome, highest first:
    1.0  USEFUL       right arithmetic, and it performs one of the problem's operations from
                      its inputs: numbers from the problem, or results the earlier steps wrote
                      (either order for + and *);
    0.4  IRRELEVANT   right arithmetic but no justified progress: repeats a done operation, a
                      no-op (`12 + 0 = 12`), an operation the problem lacks, or numbers the
                      trace never produced;
    0.2  UNPARSEABLE  no `a op b = c` in the step at all;
    0.0  WRONG        `a op b` is not `c`.
  Wrong arithmetic scores below unparseable text: a confident false claim is the error the
  PRM must learn to catch (ProcessBench's "first wrong step").
- The judge is local: it trusts the results earlier steps *wrote*, right or wrong. After a
  slip `7 + 5 = 13`, the step `13 * 3 = 39` is right given what came before and scores 1;
  the trace went wrong at the slip, which is where the first error is. A step that quietly
  uses the true 12 instead (`12 * 3 = 36`) uses a number the trace never produced: 0.4, but
  it still performs `*`, so the step after it (`36 - 4 = 32`) is judged from its result.
- The tracker that follows the written results (`StepTracker`) is shared with template
  extraction, which keeps only the steps that made progress.
"""
from __future__ import annotations

import re

from ..answers import extract_boxed, is_correct, normalize_answer  # re-exported for the world's users
from .problems import Num, Op, Problem, apply, parse_problem

USEFUL, IRRELEVANT, UNPARSEABLE, WRONG = 1.0, 0.4, 0.2, 0.0

_EQUATION = re.compile(r"(\d+)\s*([-+*×])\s*(\d+)\s*(?:=|gives)\s*(-?\d+)")


# ----------------------------------------------------------------------------- steps

def parse_equations(step: str) -> list[Op]:
    """Every `a op b = c` in a step, in order (the written c, right or wrong)."""
    return [Op(int(a), "*" if op == "×" else op, int(b), int(c))
            for a, op, b, c in _EQUATION.findall(step)]


def step_result(step: str) -> str | None:
    """The correct result of a step's last `a op b = c`, recomputed from the written a and b
    (None when the step writes no equation): the target of the PRM's marker auxiliary
    (prm_train.PRMTrainSpec.marker_aux)."""
    eqs = parse_equations(step)
    return str(apply(eqs[-1].op, eqs[-1].a, eqs[-1].b)) if eqs else None


class StepTracker:
    """Follows a solution step by step: which of the problem's operations are done, and the
    result each one was written with."""

    def __init__(self, problem: Problem):
        self.plan = problem.plan
        self.true_results = [op.result for op in problem.ops]
        self.written: dict[int, int] = {}  # operation index -> result the trace wrote

    def _values(self, arg, grounded: bool) -> set[int]:
        """What a step may use for this operand: a problem number, the result the trace wrote,
        and (when not `grounded`) the true result even if the trace never wrote it."""
        if isinstance(arg, Num):
            return {arg.value}
        values = {self.written[arg.index]} if arg.index in self.written else set()
        return values if grounded else values | {self.true_results[arg.index]}

    def match(self, eq: Op, grounded: bool = True) -> int | None:
        """Index of a not-yet-done operation that `eq` performs. Grounded: its operands are
        problem numbers or results the trace wrote; otherwise true results count too."""
        for i, (op, left, right) in enumerate(self.plan):
            if i in self.written or op != eq.op:
                continue
            a, b = self._values(left, grounded), self._values(right, grounded)
            if (eq.a in a and eq.b in b) or (op in "+*" and eq.a in b and eq.b in a):
                return i
        return None

    def score(self, eq: Op) -> float:
        if apply(eq.op, eq.a, eq.b) != eq.result:
            return WRONG
        return USEFUL if self.match(eq) is not None else IRRELEVANT

    def observe(self, eq: Op) -> int | None:
        """Take a written equation into account; return the operation it performed, if any.
        An ungrounded step that performs an operation still counts as done, so the steps
        after it are judged on what it wrote."""
        i = self.match(eq)
        i = self.match(eq, grounded=False) if i is None else i
        if i is not None:
            self.written[i] = eq.result
        return i

    def judge(self, step: str) -> float:
        """Score one step (see the module docstring), then observe it."""
        equations = parse_equations(step)
        if not equations:
            return UNPARSEABLE
        score = USEFUL
        for eq in equations:
            score = min(score, self.score(eq))
            self.observe(eq)
        return score


def judge_steps(problem_text: str, steps: list[str]) -> list[float]:
    """judge_step for every step of a solution, in one pass."""
    tracker = StepTracker(parse_problem(problem_text))
    return [tracker.judge(step) for step in steps]


def judge_step(problem_text: str, previous_steps: list[str], step: str) -> float:
    """Quality of `step` in [0, 1] given the problem and the steps before it."""
    return judge_steps(problem_text, [*previous_steps, step])[-1]
