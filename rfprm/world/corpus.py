"""Texts for training the built-in world's tiny BPE tokenizer.

The tokenizer should see what the models will read and write: problems, prompts with plans,
whole traces (with their `<think>` tags, blank lines and \\boxed{}), and bare equations. Notable
choices:
- `world_corpus(n, seed)` returns exactly n texts, one problem each, cycling through five kinds:
  problem, prompt with its plan, trace, trace, equation lines. Traces get two slots of five
  because they are most of the text the models see.
- The equation lines add random `a op b = c` over a wider number range (0-400) than the
  problems use, so slips and a policy's odd numbers still split into sensible pieces.
- The chat-template special tokens are not here: the tokenizer adds those itself.
"""
from __future__ import annotations

import random

from .problems import apply, parse_problem
from .teachers import make_traces
from .templates import problem_template, template_prompt
from .traces import format_trace


def _equation_lines(problem_text: str, rng: random.Random) -> str:
    lines = [str(op) for op in parse_problem(problem_text).ops]
    for _ in range(3):
        op = rng.choice("+-*")
        a, b = rng.randint(0, 400), rng.randint(0, 20 if op == "*" else 400)
        lines.append(f"{a} {op} {b} = {apply(op, a, b)}")
    return "\n".join(lines)


def world_corpus(n: int, seed: int) -> list[str]:
    """n representative texts of the world (see the module docstring)."""
    rng = random.Random(f"corpus:{seed}")
    texts = []
    for i, rec in enumerate(make_traces(n, seed)):
        kind = i % 5
        if kind == 0:
            texts.append(rec["problem"])
        elif kind == 1:
            texts.append(template_prompt(rec["problem"], problem_template(rec["problem"])))
        elif kind in (2, 3):
            texts.append(format_trace(rec["trajectory"], rec["response"]))
        else:
            texts.append(_equation_lines(rec["problem"], rng))
    return texts
