"""JSONL records in and out: problems, traces and labelled traces, checked line by line.

The three kinds (../shared/design.md, "Data"):
    problem    {"problem": str, "answer": str}
    trace      {"problem", "trajectory", "response", "answer"?}
    labelled   a trace plus "step_rewards": [float], one per thinking step, and usually
               "trajectory_reward": float, both in [0, 1] (a record without it trains the
               step head only: rollouts may be run for part of a pool)

Notable choices:
- Every bad line is one RfprmError naming the file, the line and the field at fault
  (`data.jsonl:7: field 'step_rewards' has 3 values but 'trajectory' has 4 steps`). With
  `skip_bad=True` bad lines are dropped instead; the returned `Records` list keeps their
  messages in `.skipped`. A file with no records at all is an error either way.
- `fields` maps other datasets' names onto ours, `our=theirs`:
  `problem=question,trajectory=deepseek_thinking_trajectory,response=deepseek_attempt` (s1K-1.1),
  `problem=problem,trajectory=deepseek_reasoning,response=deepseek_solution` (OpenThoughts).
  Keys we do not know pass through untouched (`teacher`, `first_error`, ...).
- Normalisations, in order: a `prompt` stands in for a missing `problem` (TRL's name); a list
  of strings in `trajectory` or `response` is a list of steps (s1K's `thinking_trajectories`)
  and is joined with blank lines; a missing `response` is taken from `<think>...</think>response`
  in `trajectory`, `text` or `completion` (see steps.split_think); an integer or float
  `answer` becomes a string.
- TRL's stepwise format {"prompt", "completions": [str], "labels": [bool]} has no separate
  response. The trajectory is the completions joined by blank lines (a blank line inside one
  completion is folded to a single newline so that each completion stays one step), the
  `labels` become `step_rewards` (0.0 / 1.0), the response is the *last* completion -- in TRL
  data the last step is the one that states the answer -- and, when the record has no
  `trajectory_reward`, it is 1.0 if every step is labelled right, else 0.0.
- `step_rewards` and `trajectory_reward` are checked in every trace-like record that carries
  them, not only in "labelled" files: a bad label should never pass silently.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import RfprmError, atomic_file
from .steps import STEP_SEP, split_steps, split_think

KINDS = ("problem", "trace", "labelled")
# Our field names: the ones `fields` may map onto (the text-carrying ones are normalised away).
FIELD_NAMES = ("problem", "answer", "trajectory", "response", "step_rewards", "trajectory_reward",
               "prompt", "text", "completion", "completions", "labels")
_ORDER = ("problem", "trajectory", "response", "answer", "step_rewards", "trajectory_reward")


class Records(list):
    """A list of normalised records; `.skipped` holds the message of every line skipped as bad."""

    def __init__(self, records: Iterable[dict] = (), skipped: Iterable[str] = ()):
        super().__init__(records)
        self.skipped = list(skipped)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class _Bad(Exception):
    """A record-level problem; the caller adds the file and line."""


# ----------------------------------------------------------------------------- --fields

def parse_fields(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"problem=question,trajectory=deepseek_thinking_trajectory"` -> {"problem": "question", ...}."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            ours, eq, theirs = (s.strip() for s in part.partition("="))
            if not eq or not ours or not theirs:
                raise RfprmError(f"--fields: {part!r} is not ours=theirs, e.g. problem=question")
            items.append((ours, theirs))
    mapping: dict[str, str] = {}
    for ours, theirs in items:
        if ours not in FIELD_NAMES:
            raise RfprmError(f"--fields: unknown field {ours!r}, expected one of {', '.join(FIELD_NAMES)}")
        if ours in mapping:
            raise RfprmError(f"--fields: {ours!r} is mapped twice")
        if not isinstance(theirs, str) or not theirs:
            raise RfprmError(f"--fields: {ours!r} must map to a field name, got {theirs!r}")
        mapping[ours] = theirs
    return mapping


# ----------------------------------------------------------------------------- one record

def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(rec: dict, key: str) -> str:
    value = rec[key]
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        value = STEP_SEP.join(value)  # a list of steps (s1K's thinking_trajectories)
    if not isinstance(value, str):
        raise _Bad(f"field {key!r}: expected a string, got {_type_name(value)}")
    return value


def _unit_number(value: Any, what: str) -> float:
    """A number in [0, 1] (bools count as 0 / 1); `what` names it in the message."""
    if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:  # NaN fails the range test
        return float(value)
    shown = repr(value) if isinstance(value, (int, float)) else _type_name(value)
    raise _Bad(f"{what}: expected a number in [0, 1], got {shown}")


def _from_trl_stepwise(rec: dict) -> None:
    """TRL's {"completions", "labels"} -> trajectory, response, step_rewards (module docstring)."""
    completions = rec.pop("completions")
    if not isinstance(completions, list) or not completions:
        found = "an empty list" if isinstance(completions, list) else _type_name(completions)
        raise _Bad(f"field 'completions': expected a non-empty list of strings, got {found}")
    steps = []
    for i, step in enumerate(completions):
        if not isinstance(step, str) or not step.strip():
            found = "empty" if isinstance(step, str) else _type_name(step)
            raise _Bad(f"field 'completions': item {i} is {found}, expected a non-empty string")
        # A blank line inside a completion would split it in two: fold it to one newline.
        steps.append(re.sub(r"\n[ \t]*\n\s*", "\n", step.replace("\r\n", "\n").strip()))
    rec["trajectory"], rec["response"] = STEP_SEP.join(steps), steps[-1]
    if "labels" in rec:
        labels = rec.pop("labels")
        if not isinstance(labels, list) or len(labels) != len(steps):
            n = f"{len(labels)} values" if isinstance(labels, list) else f"a {_type_name(labels)}"
            raise _Bad(f"field 'labels' has {n} but 'completions' has {len(steps)} steps")
        rec["step_rewards"] = [_unit_number(v, f"field 'labels': item {i}") for i, v in enumerate(labels)]
        rec.setdefault("trajectory_reward", float(all(r == 1.0 for r in rec["step_rewards"])))


def _fill_in_trace(rec: dict) -> None:
    """Bring the text fields of a trace to `trajectory` + `response` (module docstring)."""
    if "completions" in rec and "trajectory" not in rec:
        _from_trl_stepwise(rec)
    source = next((k for k in ("trajectory", "text", "completion") if k in rec), None)
    if source is None:
        raise _Bad("missing field 'trajectory'")
    combined = _text(rec, source)
    if source != "trajectory":
        del rec[source]
    if "response" in rec:
        rec["response"] = _text(rec, "response")
    if "<think>" in combined or "</think>" in combined:
        try:
            trajectory, response = split_think(combined)
        except RfprmError as e:
            raise _Bad(f"field {source!r}: {e}") from None
        if response and "response" in rec:
            raise _Bad(f"field {source!r} has a response after </think> and field 'response' is also given")
        rec["trajectory"] = trajectory
        rec.setdefault("response", response)
    elif source != "trajectory":
        raise _Bad(f"field {source!r} has no <think>...</think> block to split into trajectory and response")
    else:
        rec["trajectory"] = combined
    if "response" not in rec:
        raise _Bad("trajectory without a response: missing field 'response' "
                   "(and no </think> in 'trajectory' to split on)")


def _check_trace(rec: dict, kind: str) -> None:
    n_steps = len(split_steps(rec["trajectory"]))
    if n_steps == 0:
        raise _Bad("field 'trajectory' has no steps (only blank text)")
    if not rec["response"].strip():
        raise _Bad("trajectory without a response: field 'response' is empty")
    if kind == "labelled":
        if "step_rewards" not in rec:
            raise _Bad("missing field 'step_rewards'")
    if "step_rewards" in rec:
        rewards = rec["step_rewards"]
        if not isinstance(rewards, list):
            raise _Bad(f"field 'step_rewards': expected a list of numbers in [0, 1], "
                       f"got {_type_name(rewards)}")
        rec["step_rewards"] = [_unit_number(v, f"field 'step_rewards': item {i}")
                               for i, v in enumerate(rewards)]
        if len(rewards) != n_steps:
            raise _Bad(f"field 'step_rewards' has {len(rewards)} values but 'trajectory' has {n_steps} steps")
    if "trajectory_reward" in rec:
        rec["trajectory_reward"] = _unit_number(rec["trajectory_reward"], "field 'trajectory_reward'")


def normalize_record(raw: Any, kind: str, fields: str | Mapping[str, str] | None = None,
                     where: str = "record") -> dict:
    """One record checked and brought to our names; RfprmError("WHERE: ...") when it is bad."""
    if kind not in KINDS:
        raise RfprmError(f"unknown record kind {kind!r}, expected one of {', '.join(KINDS)}")
    try:
        return _normalize(raw, kind, parse_fields(fields))
    except _Bad as e:
        raise RfprmError(f"{where}: {e}") from None


def _normalize(raw: Any, kind: str, mapping: dict[str, str]) -> dict:
    if not isinstance(raw, dict):
        raise _Bad(f"expected a JSON object, got {_type_name(raw)}")
    theirs = set(mapping.values())
    rec = {k: v for k, v in raw.items() if k not in theirs}
    for ours, their_name in mapping.items():
        if their_name not in raw:
            raise _Bad(f"missing field {their_name!r} (mapped to {ours!r} by --fields)")
        rec[ours] = raw[their_name]
    if "problem" not in rec and "prompt" in rec:
        rec["problem"] = rec.pop("prompt")

    if "problem" not in rec:
        raise _Bad("missing field 'problem'")
    if not isinstance(rec["problem"], str):
        raise _Bad(f"field 'problem': expected a string, got {_type_name(rec['problem'])}")
    if not rec["problem"].strip():
        raise _Bad("field 'problem' is empty")
    if "answer" in rec:
        answer = rec["answer"]
        if isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer):
            rec["answer"] = str(answer)
        elif not isinstance(answer, str):
            raise _Bad(f"field 'answer': expected a string or a number, got {_type_name(answer)}")
    elif kind == "problem":
        raise _Bad("missing field 'answer'")

    if kind != "problem":
        _fill_in_trace(rec)
        _check_trace(rec, kind)
    first = {k: rec.pop(k) for k in _ORDER if k in rec}
    return {**first, **rec}


# ----------------------------------------------------------------------------- files

def read_records(path: str | os.PathLike, kind: str, fields: str | Mapping[str, str] | None = None,
                 skip_bad: bool = False) -> Records:
    """Every record of a JSONL file, checked and normalised (see the module docstring).

    Blank lines are skipped. A bad line raises RfprmError("FILE:LINE: ..."), or with
    `skip_bad` is dropped and its message kept in the result's `.skipped`."""
    if kind not in KINDS:
        raise RfprmError(f"unknown record kind {kind!r}, expected one of {', '.join(KINDS)}")
    mapping = parse_fields(fields)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RfprmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RfprmError(f"{path}: is a directory, expected a JSONL file") from None
    except UnicodeDecodeError as e:
        raise RfprmError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise RfprmError(f"{path}: cannot read ({e.strerror})") from None

    records, skipped = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise _Bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
            records.append(_normalize(raw, kind, mapping))
        except _Bad as e:
            message = f"{path}:{line_no}: {e}"
            if not skip_bad:
                raise RfprmError(message) from None
            skipped.append(message)
    if not records:
        detail = f" ({len(skipped)} bad lines skipped; first: {skipped[0]})" if skipped else ""
        raise RfprmError(f"{path}: no records{detail}")
    return Records(records, skipped)


def write_records(path: str | os.PathLike, records: Iterable[Mapping]) -> int:
    """Write records as JSONL through a temporary file; nothing is left behind on failure.
    Returns the number of records written."""
    path = Path(path)
    n = 0
    with atomic_file(path) as f:
        for n, rec in enumerate(records, start=1):
            try:
                line = json.dumps(dict(rec), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise RfprmError(f"{path}: record {n} cannot be written as JSON ({e})") from None
            f.write(line + "\n")
    return n
