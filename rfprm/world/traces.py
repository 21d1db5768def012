"""The R1 trace format of the built-in world: thinking steps, a mirroring response, \\boxed{}.

A policy's output text is

    <think>
    First, 7 + 5 = 12.

    Then 12 * 3 = 36.

    Then 36 - 4 = 32.
    </think>

    7 + 5 gives 12.

    12 * 3 gives 36.

    36 - 4 gives 32, so the answer is \\boxed{32}

Notable choices:
- One operation per step, steps separated by a blank line ("\\n\\n"), the separator the PRM
  splits on. The thinking writes `a op b = c`; the response says `a op b gives c`, a slightly
  different phrasing of the same content, so the alignment score has something to measure.
- The text is kept short (a 3-step trace is about 150 characters) and regular: a 1-2M-parameter
  model is trained on it, and every token costs CPU time.
- `parse_trace` inverts `format_trace` exactly, and returns None for text that is not one
  `<think>...</think>` block followed by a non-empty response (what a half-trained policy
  often writes); callers count those as wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..answers import THINK_CLOSE, THINK_OPEN, format_trace, parse_trace  # re-exported
from .problems import Op

STEP_SEP = "\n\n"


def think_step(index: int, op: Op) -> str:
    return f"{'First,' if index == 0 else 'Then'} {op.a} {op.op} {op.b} = {op.result}."


def response_step(op: Op, boxed: int | str | None = None) -> str:
    """`a op b gives c.`; the last step passes `boxed` and ends in \\boxed{...} instead."""
    head = f"{op.a} {op.op} {op.b} gives {op.result}"
    return f"{head}." if boxed is None else f"{head}, so the answer is \\boxed{{{boxed}}}"


def split_steps(text: str) -> list[str]:
    """Steps of a trajectory or response: blocks separated by blank lines, stripped."""
    return [s.strip() for s in text.split(STEP_SEP) if s.strip()]


@dataclass
class Trace:
    """What a teacher writes: thinking steps, response steps, and (for evaluation only) the
    index of the first wrong thinking step, -1 when every thinking step is right."""
    steps: list[str]
    response_steps: list[str]
    first_error: int = -1

    @property
    def trajectory(self) -> str:
        return STEP_SEP.join(self.steps)

    @property
    def response(self) -> str:
        return STEP_SEP.join(self.response_steps)

    @property
    def text(self) -> str:
        return format_trace(self.trajectory, self.response)


def written_trace(thinking: list[Op], response: list[Op] | None = None,
                  first_error: int = -1) -> Trace:
    """Render operations as a Trace. The response mirrors `thinking` unless given, and boxes
    its own last result."""
    response = thinking if response is None else response
    steps = [think_step(i, op) for i, op in enumerate(thinking)]
    answer = [response_step(op) for op in response[:-1]]
    answer.append(response_step(response[-1], boxed=response[-1].result))
    return Trace(steps, answer, first_error)
