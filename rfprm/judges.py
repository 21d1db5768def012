"""Quality judges for real data: a local instruct model prompted to rate each thinking step.

The built-in world uses an LLM-like noisy judge (`rfprm.world.NoisyJudge`; its exact `judge_step`
only as a named oracle option); real traces have no
such oracle, so the paper asks an LLM (GPT-4o there; here any local instruct model rfprm loads)
to rate every step given the problem, the earlier steps and the final response. The prompt is
below, in the code, so it can be read and changed.
"""
from __future__ import annotations

import re
import warnings

from .errors import RfprmError
from .generate import chat_complete
from .steps import join_steps


JUDGE_PROMPT = """\
You are grading one step of a worked solution.

Problem:
{problem}

Earlier steps of the reasoning:
{previous}

Final response the reasoning led to:
{response}

Step to grade:
{step}

Grade the step for logical soundness (is it correct?), consistency (does it agree with the \
problem, the earlier steps and the final response?) and progress (does it move the solution \
forward?). Reply with one integer from 0 (wrong or useless) to 10 (sound, consistent and \
useful), and nothing else."""


class LLMJudge:
    """The quality judge for real data: a local instruct model rates each step 0-10.

    The reply's first integer, divided by 10, is the score; a reply without an integer in
    0..10 scores 0.5 (the middle, so it neither rewards nor punishes) and is counted in
    `n_unparseable`, with a warning after each batch. Greedy decoding, `max_new_tokens` short:
    the answer is one number. `max_previous_steps` keeps only the last k earlier steps in the
    prompt (long trajectories would otherwise make the prompts grow quadratically)."""

    def __init__(self, model, tok, max_new_tokens: int = 8, batch_size: int = 64,
                 max_previous_steps: int | None = None, prompt: str = JUDGE_PROMPT):
        if int(max_new_tokens) < 1 or int(batch_size) < 1:
            raise RfprmError(f"LLMJudge: max_new_tokens and batch_size must be >= 1, got "
                             f"{max_new_tokens} and {batch_size}")
        self.model, self.tok = model, tok
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.max_previous_steps, self.prompt = max_previous_steps, prompt
        self.n_judged = self.n_unparseable = 0

    def render(self, problem: str, previous_steps: list[str], step: str, response: str) -> str:
        k = self.max_previous_steps
        if k is not None:
            previous_steps = previous_steps[-k:] if k > 0 else []
        previous = join_steps(previous_steps) if previous_steps else "(none: this is the first step)"
        return self.prompt.format(problem=problem.strip(), previous=previous,
                                  response=response.strip() or "(not given)", step=step.strip())

    @staticmethod
    def parse(reply: str) -> float | None:
        """First integer of the reply / 10, or None when there is none in 0..10."""
        m = re.search(r"-?\d+", reply)
        if m is None or not 0 <= int(m.group()) <= 10:
            return None
        return int(m.group()) / 10

    def score_traces(self, traces: list[tuple[str, list[str], str]], progress: bool = False) -> list[list[float]]:
        prompts = [self.render(problem, steps[:t], step, response)
                   for problem, steps, response in traces for t, step in enumerate(steps)]
        replies = chat_complete(self.model, self.tok, prompts, max_new_tokens=self.max_new_tokens,
                                temperature=0.0, batch_size=self.batch_size, progress=progress) if prompts else []
        parsed = [self.parse(r) for r in replies]
        bad = sum(p is None for p in parsed)
        self.n_judged += len(parsed)
        self.n_unparseable += bad
        if bad:
            warnings.warn(f"LLMJudge: {bad} of {len(parsed)} replies had no integer 0-10; scored 0.5 "
                          f"({self.n_unparseable} of {self.n_judged} so far)")
        flat = iter(0.5 if p is None else p for p in parsed)
        return [[next(flat) for _ in steps] for _, steps, _ in traces]

    def __call__(self, problem: str, previous_steps: list[str], step: str, response: str = "") -> float:
        return self.score_traces([(problem, [*previous_steps, step], response)])[0][-1]


TEMPLATE_PROMPT = """\
Below are a problem, a worked solution's reasoning and its final response. Write the \
high-level solution template they follow: the sequence of steps or methods, in a few short \
lines, general enough to guide a fresh attempt, without any of the specific numbers or the \
answer.

Problem:
{problem}

Reasoning:
{trajectory}

Final response:
{response}

Template:"""


class LLMTemplateExtractor:
    """The paper's expert template extractor, played by a local instruct model (greedy)."""

    def __init__(self, model, tok, max_new_tokens: int = 128, batch_size: int = 16):
        self.model, self.tok = model, tok
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, problem: str, trajectory: str, response: str) -> str:
        prompt = TEMPLATE_PROMPT.format(problem=problem.strip(), trajectory=trajectory.strip(),
                                        response=response.strip())
        return chat_complete(self.model, self.tok, [prompt], max_new_tokens=self.max_new_tokens)[0].strip()


def guided_prompt(problem: str, template: str) -> str:
    """The user message for a template-guided rollout on real data."""
    return (f"{problem.strip()}\n\nSolve the problem following this solution template, and put "
            f"your final answer within \\boxed{{}}.\nTemplate:\n{template.strip()}")
