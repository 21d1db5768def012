"""A task: what the library's uses need to know about the problems they run on.

ReasonFlux-PRM's pipeline (arXiv 2506.18896) is task-agnostic except at a few points: how a
problem is put to a model, how a final answer is checked, who rates a step's quality, and how
a trajectory's template is extracted and used to guide the policy (the paper's template-guided
trajectory-level reward). A `Task` holds those pieces, so the library reads the same whether
the problems are the built-in arithmetic world (`rfprm.world.task.TASK`) or a user's JSONL
file (`TEXT_TASK`).

The library never imports the world; the scripts pick a task and hand its pieces on:

    task = TEXT_TASK                                    # or rfprm.world.task.TASK
    prompts = [task.prompt(p["problem"]) for p in problems]
    ok = task.is_correct(completion, gold_answer)

- `prompt` and `is_correct` have library defaults: the problem text itself as the user turn,
  and the last `\\boxed{}` compared by `rfprm.answers.is_correct` (the paper's rule reward).
- `judge`, `extract_template`, `template_prompt` and `step_result` are None when the task has
  no exact version of them; then the scripts use the LLM stand-ins of `rfprm.judges` (a local
  instruct model rating steps, writing templates) or leave the feature off.
- `teachers` names the teachers of a pool whose traces carry a `teacher` field, in the order a
  table should list them; the teacher is never shown to a scorer (evaluation only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .answers import is_correct as boxed_is_correct


def plain_prompt(problem: str) -> str:
    """The user turn for a problem: its text, stripped."""
    return problem.strip()


@dataclass(frozen=True)
class Task:
    name: str = "text"
    prompt: Callable[[str], str] = plain_prompt                       # problem text -> user turn
    is_correct: Callable[[str, str], bool] = boxed_is_correct          # (completion, gold) -> right?
    judge: Callable[[str, list[str], str], float] | None = None        # (problem, earlier, step) -> [0, 1]
    extract_template: Callable[[str, str, str], str] | None = None     # (problem, trajectory, response) -> template
    template_prompt: Callable[[str, str], str] | None = None           # (problem, template) -> guided user turn
    step_result: Callable[[str], str | None] | None = None             # step -> its correct result (marker auxiliary)
    teachers: tuple[str, ...] = ()                                     # table order of the pool's teachers


TEXT_TASK = Task()   # any problem set given as JSONL: the rule reward, no exact judge
