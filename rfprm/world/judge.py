"""The world's checkers: final answers, and step judges standing in for the paper's GPT-4o.

ReasonFlux-PRM's step "quality" label comes from an LLM judge rating each thinking step for
soundness, consistency and progress given the problem and the earlier steps. The world has two:

- `NoisyJudge` (the default quality judge of the world's labels): an LLM-like judge. It reads
  each step locally (`local_verdict`: the arithmetic, and whether the operands are the
  problem's numbers or earlier results, no no-op, repeat or undo) without knowing the
  problem's plan, so a step that executes a misread plan passes, and it errs at documented
  rates: it misses MISS_RATE = 20% of the steps it would flag (scores them 1.0) and flags
  FALSE_ALARM_RATE = 5% of the steps it would pass (scores them 0.0). Roughly GPT-4o as a
  ProcessBench critic (first-error F1 in the 60s-70s, Zheng et al. 2024); the rates were fixed
  before any PRM was trained on them. Each error is a pure function of (seed, problem, step
  index, step text), so labels are the same on every run.
- `judge_step` (the *oracle*, `judge="oracle"`, off by default): exact, and it knows the
  problem's plan. No real user has it; it is kept as a ceiling row and for the world's own
  checks (templates, teachers).

The exact judge's notable choices:

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

import random
import re

from ..answers import extract_boxed, is_correct, normalize_answer  # re-exported for the world's users
from ..errors import RfprmError
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


# ----------------------------------------------------------------------------- local reading

def problem_numbers(problem: Problem) -> set[int]:
    """The numbers written in the problem text."""
    return {arg.value for _, left, right in problem.plan for arg in (left, right) if isinstance(arg, Num)}


def local_verdict(eq: Op, numbers: set[int], earlier: list[Op]) -> float:
    """What a reader who checks one step against the problem's numbers and the earlier steps
    -- but does not know the problem's plan -- can see: WRONG arithmetic; IRRELEVANT for a
    no-op (`x + 0`, `x - 0`, `x * 1`), a repeat of an earlier equation, undoing the previous
    step (`12 - 5 = 7` after `7 + 5 = 12`), or an operand that is neither a problem number nor
    an earlier result; USEFUL otherwise. A step that follows a misread plan passes."""
    if apply(eq.op, eq.a, eq.b) != eq.result:
        return WRONG
    written = {o.result for o in earlier}
    no_op = (eq.op in "+-" and eq.b == 0) or (eq.op == "*" and 1 in (eq.a, eq.b))
    repeat = any((o.a, o.op, o.b) in ((eq.a, eq.op, eq.b), (eq.b, eq.op, eq.a)) for o in earlier
                 if o.op == eq.op and (o.op in "+*" or (o.a, o.b) == (eq.a, eq.b)))
    undo = bool(earlier) and eq.a == earlier[-1].result and eq.result == earlier[-1].a and (
        {eq.op, earlier[-1].op} == {"+", "-"}) and eq.b == earlier[-1].b
    grounded = {eq.a, eq.b} <= numbers | written
    return IRRELEVANT if no_op or repeat or undo or not grounded else USEFUL


def local_verdicts(problem_text: str, steps: list[str]) -> list[float]:
    """local_verdict of every step (lowest over a step's equations; UNPARSEABLE without one)."""
    numbers, earlier, out = problem_numbers(parse_problem(problem_text)), [], []
    for step in steps:
        equations = parse_equations(step)
        score = USEFUL if equations else UNPARSEABLE
        for eq in equations:
            score = min(score, local_verdict(eq, numbers, earlier))
            earlier.append(eq)
        out.append(score)
    return out


def judge_steps(problem_text: str, steps: list[str]) -> list[float]:
    """judge_step for every step of a solution, in one pass."""
    tracker = StepTracker(parse_problem(problem_text))
    return [tracker.judge(step) for step in steps]


def judge_step(problem_text: str, previous_steps: list[str], step: str) -> float:
    """Quality of `step` in [0, 1] given the problem and the steps before it."""
    return judge_steps(problem_text, [*previous_steps, step])[-1]


# ----------------------------------------------------------------------------- an LLM-like judge

MISS_RATE = 0.20         # of flawed steps (WRONG or IRRELEVANT by local reading) scored as sound
FALSE_ALARM_RATE = 0.05  # of sound steps scored as wrong


class NoisyJudge:
    """The world's default quality judge: local reading plus seeded errors (module docstring).
    Called like `judge_step`; `score_traces` rates many traces at once for label_records."""

    def __init__(self, miss_rate: float = MISS_RATE, false_alarm_rate: float = FALSE_ALARM_RATE,
                 seed: int = 0):
        for name, v in (("miss_rate", miss_rate), ("false_alarm_rate", false_alarm_rate)):
            if not 0.0 <= v <= 1.0:
                raise RfprmError(f"NoisyJudge: {name} must be in [0, 1], got {v}")
        self.miss_rate, self.false_alarm_rate, self.seed = miss_rate, false_alarm_rate, seed

    def __repr__(self) -> str:
        return f"NoisyJudge(miss_rate={self.miss_rate}, false_alarm_rate={self.false_alarm_rate}, seed={self.seed})"

    def _err(self, problem: str, t: int, step: str, verdict: float) -> float:
        u = random.Random(f"judge:{self.seed}:{problem}:{t}:{step}").random()
        if verdict == USEFUL:
            return WRONG if u < self.false_alarm_rate else USEFUL
        if verdict in (WRONG, IRRELEVANT):
            return USEFUL if u < self.miss_rate else verdict
        return verdict                                   # UNPARSEABLE: nothing to misjudge

    def steps(self, problem: str, steps: list[str]) -> list[float]:
        return [self._err(problem, t, s, v) for t, (s, v) in enumerate(zip(steps, local_verdicts(problem, steps)))]

    def score_traces(self, traces, progress: bool = False) -> list[list[float]]:
        return [self.steps(problem, list(steps)) for problem, steps, _ in traces]

    def __call__(self, problem: str, previous_steps: list[str], step: str, response: str = "") -> float:
        return self.steps(problem, [*previous_steps, step])[-1]
