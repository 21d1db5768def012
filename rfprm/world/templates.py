"""Reasoning templates of the built-in world, and the prompts that carry them.

ReasonFlux-PRM's trajectory-level reward asks an expert to extract a high-level template from
(problem, trajectory, response), lets a policy answer the problem N times guided by it, and
uses the fraction of right answers as the reward. Here the template is the sequence of
operations, written `+ then * then -`. Notable choices:

- `extract_template` keeps only the thinking steps that made progress (judge.StepTracker), in
  the order they were done: a wandering trace's detours drop out, and a slip does not change
  the plan (its operation was still the right one). When the thinking shows no progress at all
  it falls back to the response, then to every equation written, then to "" (no plan).
- It reads the trace only; it never consults the problem's true operations. A trace that took
  a wrong turn yields a wrong plan, which is the point of the trajectory reward.
- A prompt with a plan is the problem text, a newline, then `Plan: <template>`; the first line
  is still the problem, so `parse_problem` reads either.
- `wrong_template` gives a plausible wrong plan (one operator changed, two swapped, or one
  dropped or added) for checking that the right plan helps and a wrong one hurts.
"""
from __future__ import annotations

import random

from ..errors import RfprmError
from .judge import StepTracker, parse_equations
from .problems import Problem, parse_problem
from .traces import split_steps

THEN = " then "
OPERATORS = ("+", "-", "*")


def template_of(ops: list[str]) -> str:
    return THEN.join(ops)


def template_ops(template: str) -> list[str]:
    """`+ then * then -` -> ['+', '*', '-']; raises on anything else."""
    ops = [t.strip() for t in template.split(THEN.strip())] if template.strip() else []
    if any(op not in OPERATORS for op in ops):
        raise RfprmError(f"bad template {template!r}: expected operators + - * joined by 'then'")
    return ops


def problem_template(problem: Problem | str) -> str:
    """The true template of a problem (its operations in evaluation order)."""
    problem = parse_problem(problem) if isinstance(problem, str) else problem
    return template_of(problem.op_sequence)


def extract_template(problem_text: str, trajectory: str, response: str) -> str:
    """The plan the trace followed: operators of its useful steps (see the module docstring)."""
    for text in (trajectory, response):
        tracker, ops = StepTracker(parse_problem(problem_text)), []
        for step in split_steps(text):
            for eq in parse_equations(step):
                if tracker.observe(eq) is not None:
                    ops.append(eq.op)
        if ops:
            return template_of(ops)
    return template_of([eq.op for eq in parse_equations(trajectory)])


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
    true_ops = (parse_problem(problem) if isinstance(problem, str) else problem).op_sequence
    while True:
        ops = list(true_ops)
        kind = rng.random()
        i = rng.randrange(len(ops))
        if kind < 0.5:                                   # one operator changed
            ops[i] = rng.choice([o for o in OPERATORS if o != ops[i]])
        elif kind < 0.8 and len(ops) >= 2:               # two neighbours swapped
            i = min(i, len(ops) - 2)
            ops[i], ops[i + 1] = ops[i + 1], ops[i]
        elif len(ops) > 2 and rng.random() < 0.5:        # one dropped
            del ops[i]
        else:                                            # one added
            ops.insert(i, rng.choice(OPERATORS))
        if ops != true_ops:
            return template_of(ops)
