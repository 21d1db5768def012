"""How a trace becomes PRM input ids, and where the PRM reads its scores.

A trace is (problem, trajectory, response): the thinking text without its `<think>` tags and
the final answer text. Its thinking steps are the trajectory split on blank lines
(`rfprm.steps.split_steps`). Each layout fixes the exact text, and two kinds of read-out:
a token position per step (the step scores) and one position for the trajectory score.

- `"rfprm"`, trajectory-aware (rfprm's own). The paper's step reward is R(s_t | x, s_<t, a):
  conditioned on the final response a. A causal model sees only what came before, so the
  response is written *first*, then the thinking steps, each closed by `<extra_0>`; one more
  `<extra_0>` right after the last step's marker is the trajectory read-out R(x, y). Steps are
  separated by a blank line after their marker, so the thinking reads as it was written:

      <|im_start|>user
      Compute 6 * 4 + 3.<|im_end|>
      <|im_start|>assistant
      6 * 4 gives 24.

      24 + 3 gives 27, so the answer is \\boxed{27}

      <think>
      First, 6 * 4 = 24.<extra_0>

      Then 24 + 3 = 27.<extra_0><extra_0>

  i.e. `{response}\\n\\n<think>\\n` + `"\\n\\n".join(step + "<extra_0>")` + `"<extra_0>"`; the
  response is stripped of surrounding whitespace; `<think>` is plain text, not a special token;
  the input ends at the read-out (no `<|im_end|>`: nothing after it could change a score).
  n steps -> n + 1 markers.

- `"qwen"`, the Qwen2.5-Math-PRM / ReasonFlux-PRM-7B layout, as their model cards build it with
  the chat template: system "Please reason step by step, and put your final answer within
  \\boxed{}.", user = problem, assistant = steps joined by `<extra_0>` plus one more at the end:

      <|im_start|>system
      Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>
      <|im_start|>user
      Compute 6 * 4 + 3.<|im_end|>
      <|im_start|>assistant
      First, 6 * 4 = 24.<extra_0>Then 24 + 3 = 27.<extra_0><|im_end|>

  (and a final newline). The steps are the *thinking* steps; with `response_as_step=True` the
  whole response is appended as one last step. n steps -> n markers, one per step, and the
  trajectory score is the score at the last marker (the last step's; the response's when it is
  appended). These checkpoints were never trained on a separate trajectory read-out.

- `"scalar"`, the ReasonFlux-PRM-1.5B layout: raw text, no template, truncated to its first
  2048 tokens (what its model card's `truncation=True, max_length=2048` keeps):
  `problem + "\\n" + "<think>\\n" + trajectory + "\\n</think>\\n\\n" + response`. There are no
  step scores; the trajectory score is read at the last token.

Labels (for training): `step_rewards`, one per thinking step, and `trajectory_reward`. In the
`qwen` layout without `response_as_step` the trajectory read-out *is* the last step's marker,
so the trajectory target is not used there (two targets on one output would fight); with
`response_as_step` the appended response step carries `trajectory_reward`.

Batches are right-padded. A causal model never attends to the right, so padding after the
last read-out cannot change any score and needs no attention mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import RfprmError
from .steps import split_steps
from .tokenizer import STEP_TAG

LAYOUTS = ("rfprm", "qwen", "scalar")
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SCALAR_MAX_LEN = 2048  # ReasonFlux-PRM-1.5B's model card truncates its input to this


@dataclass
class PRMExample:
    """One encoded trace: ids, where to read, and (when labelled) what to read there."""
    ids: list[int]
    step_positions: list[int]            # token index of each step's marker
    trajectory_position: int             # token index of the trajectory read-out
    step_targets: list[float] | None = None
    trajectory_target: float | None = None
    marker_targets: list[list[int]] | None = None   # per step, the token ids the marker auxiliary names ([] = none)


@dataclass
class PRMBatch:
    """Right-padded examples as tensors. Steps of all rows are flattened: step k of the batch
    is read at input_ids[step_rows[k], step_cols[k]]."""
    input_ids: torch.Tensor              # (B, T) long
    step_rows: torch.Tensor              # (N,) long, N = total steps in the batch
    step_cols: torch.Tensor              # (N,) long
    trajectory_cols: torch.Tensor        # (B,) long
    step_targets: torch.Tensor           # (N,) float, NaN where unlabelled
    trajectory_targets: torch.Tensor     # (B,) float, NaN where unlabelled or not used
    marker_targets: torch.Tensor | None = None   # (N, K) long, -100 pads; None: no example has them

    def to(self, device) -> "PRMBatch":
        return PRMBatch(*(t.to(device) if t is not None else None
                          for t in (self.input_ids, self.step_rows, self.step_cols, self.trajectory_cols,
                                    self.step_targets, self.trajectory_targets, self.marker_targets)))

    def steps_per_row(self) -> list[int]:
        return torch.bincount(self.step_rows, minlength=self.input_ids.shape[0]).tolist()


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise RfprmError(f"unknown PRM layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return layout


def _check_text(where: str, record, step_tag: bool) -> tuple[str, str, str]:
    """-> (problem, trajectory, response), with one clear line for what is missing."""
    if not isinstance(record, dict):
        raise RfprmError(f"{where}: expected a dict with problem/trajectory/response, "
                         f"got {type(record).__name__}")
    for key in ("problem", "trajectory", "response"):
        if key not in record:
            raise RfprmError(f"{where}: missing field {key!r} (a trace needs problem, trajectory, response)")
        if not isinstance(record[key], str):
            raise RfprmError(f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}")
    problem, trajectory, response = record["problem"], record["trajectory"], record["response"]
    if not trajectory.strip():
        raise RfprmError(f"{where}: the trajectory has no steps (expected thinking text, "
                         f"steps separated by blank lines)")
    if not response.strip():
        raise RfprmError(f"{where}: the trajectory has no response (expected the final answer "
                         f"text after the thinking)")
    for key, text in (("problem", problem), ("trajectory", trajectory), ("response", response)):
        if step_tag and STEP_TAG in text:
            raise RfprmError(f"{where}: the {key} contains the step marker {STEP_TAG} itself, "
                             f"which would shift every step score; remove it from the text")
    return problem, trajectory, response


def render(layout: str, problem: str, trajectory: str, response: str,
           response_as_step: bool = False) -> tuple[str, int]:
    """The exact input text of a layout, and the number of step scores it gives."""
    if layout == "scalar":
        return f"{problem}\n<think>\n{trajectory}\n</think>\n\n{response}", 0
    steps = split_steps(trajectory)
    if layout == "rfprm":
        body = "\n\n".join(s + STEP_TAG for s in steps) + STEP_TAG
        head = f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
        return f"{head}{response.strip()}\n\n<think>\n{body}", len(steps)
    if response_as_step:
        steps = steps + [response.strip()]
    assistant = STEP_TAG.join(steps) + STEP_TAG
    text = (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n"
            f"<|im_start|>assistant\n{assistant}<|im_end|>\n")
    return text, len(steps)


def encode_record(tok, record: dict, layout: str, max_len: int | None = None,
                  response_as_step: bool = False, where: str = "record") -> PRMExample:
    """Encode one trace (with its labels when it has `step_rewards` / `trajectory_reward`).
    Step layouts refuse inputs longer than max_len (cutting would drop step markers); the
    scalar layout keeps the first max_len tokens (2048 when None), as ReasonFlux-PRM-1.5B does."""
    check_layout(layout)
    problem, trajectory, response = _check_text(where, record, step_tag=layout != "scalar")
    text, n_steps = render(layout, problem, trajectory, response, response_as_step)
    ids = tok.encode(text)
    if layout == "scalar":
        ids = ids[:max_len or SCALAR_MAX_LEN]
        example = PRMExample(ids, [], len(ids) - 1)
    else:
        if tok.step_id is None:
            raise RfprmError(f"the tokenizer has no {STEP_TAG} token, which the {layout!r} layout "
                             f"puts after every step; use a PRM tokenizer (or PRM.from_lm, which adds it)")
        if max_len is not None and len(ids) > max_len:
            raise RfprmError(f"{where}: the PRM input is {len(ids)} tokens, more than max_len "
                             f"{max_len} (raise prm.max_len, or score shorter traces)")
        markers = [i for i, t in enumerate(ids) if t == tok.step_id]
        expected = n_steps + (layout == "rfprm")
        assert len(markers) == expected, f"{len(markers)} markers for {expected} read-outs"
        example = PRMExample(ids, markers[:n_steps], markers[-1])
    n_thinking = n_steps - 1 if layout == "qwen" and response_as_step else n_steps
    _attach_labels(example, record, layout, n_thinking, response_as_step, where)
    return example


def _attach_labels(example: PRMExample, record: dict, layout: str, n_thinking: int,
                   response_as_step: bool, where: str) -> None:
    steps, final = record.get("step_rewards"), record.get("trajectory_reward")
    if steps is not None and layout != "scalar":
        if not isinstance(steps, list) or not all(_is_number(v) for v in steps):
            raise RfprmError(f"{where}: step_rewards must be a list of numbers")
        if len(steps) != n_thinking:
            raise RfprmError(f"{where}: step_rewards has {len(steps)} values but the trajectory "
                             f"has {n_thinking} steps (split on blank lines); expected one per step")
        example.step_targets = [float(v) for v in steps]
        if layout == "qwen" and response_as_step:
            example.step_targets.append(math.nan)  # the response step is read as the trajectory
    if final is not None:
        if not _is_number(final):
            raise RfprmError(f"{where}: trajectory_reward must be a number, got {final!r:.40}")
        if layout != "qwen" or response_as_step:  # see the module docstring
            example.trajectory_target = float(final)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def prm_examples(tok, records, layout: str, max_len: int | None = None,
                 response_as_step: bool = False) -> list[PRMExample]:
    """Encode many traces; errors name the record by its index."""
    return [encode_record(tok, r, layout, max_len, response_as_step, where=f"record {i}")
            for i, r in enumerate(records)]


def collate(examples: list[PRMExample], pad_id: int) -> PRMBatch:
    """Right-pad a list of examples into one PRMBatch."""
    if not examples:
        raise RfprmError("PRM batch: no examples")
    T = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    rows, cols, targets, traj_cols, traj_targets, markers = [], [], [], [], [], []
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        rows += [b] * len(e.step_positions)
        cols += e.step_positions
        targets += e.step_targets if e.step_targets is not None else [math.nan] * len(e.step_positions)
        traj_cols.append(e.trajectory_position)
        traj_targets.append(math.nan if e.trajectory_target is None else e.trajectory_target)
        markers += e.marker_targets if e.marker_targets is not None else [[]] * len(e.step_positions)
    has_markers = any(e.marker_targets is not None for e in examples)
    k = max((len(m) for m in markers), default=0) or 1
    markers = [m + [-100] * (k - len(m)) for m in markers]
    return PRMBatch(ids, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long),
                    torch.tensor(traj_cols, dtype=torch.long),
                    torch.tensor(targets, dtype=torch.float32),
                    torch.tensor(traj_targets, dtype=torch.float32),
                    torch.tensor(markers, dtype=torch.long).reshape(-1, k) if has_markers else None)


def prm_inputs(tok, records, layout: str, max_len: int | None = None,
               response_as_step: bool = False) -> PRMBatch:
    """Records -> one padded batch of tensors (input ids, read-out positions, targets)."""
    return collate(prm_examples(tok, records, layout, max_len, response_as_step),
                   tok.pad_id if tok.pad_id is not None else 0)
