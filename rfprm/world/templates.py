"""Reasoning templates of the built-in world, and the prompts that carry them.

ReasonFlux-PRM's trajectory-level reward asks an expert to extract a high-level template from
(problem, trajectory, response), lets a policy answer the problem N times guided by it, and
uses the fraction of right answers as the reward. Here the template is the sequence of
operations with their operands, and `_` for an operand that is an earlier step's result:
`(14 - 4) * (3 + 14) - 2` has the template `14 - 4 then 3 + 14 then _ * _ then _ - 2`.
It says what to compute in which order, never a result. Notable choices:

- Operands are written because an operator-only plan (`- then + then * then -`) tells a
  model nothing the problem text does not: a tiny policy follows such plans no better than it
  reads the problem (greedy 77.2% with the true plan against 81.4% without).
  With operands the plan settles which numbers go together, the most common mistake of the
  tiny policy after arithmetic slips.
- `extract_template` keeps only the thinking steps that made progress (judge.StepTracker), in
  the order they were done, each written as the problem's operation it performed: a wandering
  trace's detours drop out, and a slip does not change the plan (its operation was still the
  right one). A step off the problem's plan that still reads as progress to a judge that
  does not know the plan (`judge.local_verdict`: right arithmetic on problem numbers or earlier
  results, no no-op, repeat or undo) is kept as written, an earlier result as `_`: a trace
  that misread the problem's structure (the wrong-plan teacher) yields its misread plan, so
  the template-guided rollouts follow it and miss the answer. When the thinking shows no progress at all it falls back to the response, then
  to every equation written (with its numbers), then to "" (no plan).
- It reads the trace (and the problem text, to know which operands are the problem's); it
  never consults the true solution. A trace that took a wrong turn yields a wrong plan, which
  is the point of the trajectory reward.
- A prompt with a plan is the problem text, a newline, then `Plan: <template>`; the first line
  is still the problem, so `parse_problem` reads either.
- `wrong_template` gives a plausible wrong plan (one operator changed, two steps swapped, or
  one dropped or added) for checking that the right plan helps and a wrong one hurts.
"""
from __future__ import annotations

import random
import re

from ..errors import RfprmError
from .judge import USEFUL, StepTracker, local_verdict, parse_equations, problem_numbers
from .problems import Num, Problem, parse_problem
from .traces import split_steps

THEN = " then "
OPERATORS = ("+", "-", "*")


HOLE = "_"  # an operand that is the result of an earlier step
_STEP = re.compile(r"^(\d+|_) ([-+*]) (\d+|_)$")


def template_of(steps: list[str]) -> str:
    return THEN.join(steps)


def plan_step(op: str, left, right) -> str:
    """One template step from a plan entry: numbers stay, earlier results become `_`."""
    show = lambda arg: str(arg.value) if isinstance(arg, Num) else HOLE
    return f"{show(left)} {op} {show(right)}"


def template_steps(template: str) -> list[str]:
    """`14 - 4 then _ * 3` -> ['14 - 4', '_ * 3']; raises on anything else."""
    steps = [t.strip() for t in template.split(THEN.strip())] if template.strip() else []
    bad = next((st for st in steps if not _STEP.match(st)), None)
    if bad is not None:
        raise RfprmError(f"bad template step {bad!r} in {template!r}: expected steps like "
                         f"'14 - 4' or '_ * 3' (operators + - *, _ for an earlier result) joined by 'then'")
    return steps


def template_ops(template: str) -> list[str]:
    """The operators of a template, in order: `14 - 4 then _ * 3` -> ['-', '*']."""
    return [st.split()[1] for st in template_steps(template)]


def problem_template(problem: Problem | str) -> str:
    """The true template of a problem (its operations in evaluation order)."""
    problem = parse_problem(problem) if isinstance(problem, str) else problem
    return template_of([plan_step(*entry) for entry in problem.plan])


def own_step(eq, earlier) -> str:
    """A template step for an equation off the problem's plan: an operand that an earlier step
    wrote becomes `_`, any other stays a number."""
    written = {o.result for o in earlier}
    show = lambda v: HOLE if v in written else str(v)
    return f"{show(eq.a)} {eq.op} {show(eq.b)}"


def extract_template(problem_text: str, trajectory: str, response: str) -> str:
    """The plan the trace followed: its useful steps (see the module docstring)."""
    problem = parse_problem(problem_text)
    numbers = problem_numbers(problem)
    for text in (trajectory, response):
        tracker, steps, earlier = StepTracker(problem), [], []
        for step in split_steps(text):
            for eq in parse_equations(step):
                i = tracker.observe(eq)
                if i is not None:
                    steps.append(plan_step(*problem.plan[i]))
                elif local_verdict(eq, numbers, earlier) == USEFUL:  # progress on a misread plan
                    steps.append(own_step(eq, earlier))
                earlier.append(eq)
        if steps:
            return template_of(steps)
    return template_of([f"{eq.a} {eq.op} {eq.b}" for eq in parse_equations(trajectory)])


def problem_prompt(problem_text: str) -> str:
    """The plain user message: the problem itself."""
    return problem_text.strip()


def template_prompt(problem_text: str, template: str) -> str:
    """The user message asking for a solution that follows `template`."""
    if not template.strip():
        return problem_prompt(problem_text)
    return f"{problem_prompt(problem_text)}\nPlan: {template.strip()}"


def wrong_template(problem: Problem | str, rng: random.Random) -> str:
    """A plausible template that differs from the problem's true one."""
    true_steps = template_steps(problem_template(problem))
    while True:
        steps = list(true_steps)
        kind = rng.random()
        i = rng.randrange(len(steps))
        if kind < 0.5:                                   # one operator changed
            a, op, b = steps[i].split()
            steps[i] = f"{a} {rng.choice([o for o in OPERATORS if o != op])} {b}"
        elif kind < 0.8 and len(steps) >= 2:             # two neighbours swapped
            i = min(i, len(steps) - 2)
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
        elif len(steps) > 2 and rng.random() < 0.5:      # one dropped
            del steps[i]
        else:                                            # one added: a plausible extra step
            steps.insert(i + 1, f"{HOLE} {rng.choice(OPERATORS)} {rng.randint(2, 9)}")
        if steps != true_steps:
            return template_of(steps)
