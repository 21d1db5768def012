"""Final answers and the R1 output format: the rule reward every use of the PRM shares.

A reasoning model writes `<think>\\n{trajectory}\\n</think>\\n\\n{response}` and the response ends
in `\\boxed{answer}`. ReasonFlux-PRM's RL recipe (arXiv 2506.18896, online RL; the released
code) rewards a rollout 1 when its last `\\boxed{}` matches the reference, else 0; Best-of-N
and data selection judge a pick the same way. These functions are that rule, for any task.

- `extract_boxed` reads the last *complete* `\\boxed{...}`, nested braces allowed.
- `normalize_answer` compares integers as numbers ("032", "+32", "32.0", "1,032" are 32 and
  1032) and everything else as text without spaces, `$` or a trailing period. LaTeX
  equivalence (fractions, intervals, units) is beyond it.
- `is_correct(..., checker=...)` picks the equality: "builtin" (normalize_answer), or
  "math-verify" (HF's `math-verify` package: parses both answers as LaTeX/sympy, so
  `\\frac{1}{2}` = `0.5`, `[0, 1)` = `[0,1)`, `10\\text{ cm}` = `10`); an answer either accepts
  is correct. "auto" (the default, or `set_default_checker`) uses math-verify when it is
  installed and the built-in checker otherwise; asking for "math-verify" without it is an error.
- `parse_trace` is strict: a trace with a missing or doubled tag, or an empty part, is None,
  so a malformed sample never passes for a well-formed one.
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache

from .errors import RfprmError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 1, start + len("\\boxed{")
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len("\\boxed{"): i - 1]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: fall back to the one before
    return None


def normalize_answer(s: str | int) -> str:
    """Canonical form for comparing answers: no \\boxed{}, $, spaces or trailing period;
    integers written plainly ("032", "+32", "32.0", "1,032" -> "32", "32", "32", "1032")."""
    s = str(s).strip()
    inner = extract_boxed(s)
    s = inner if inner is not None else s
    s = re.sub(r"\s+", "", s).strip("$").rstrip(".")
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"([+-]?\d+)(\.0*)?", s)
    return str(int(m.group(1))) if m else s


_INTEGER = re.compile(r"[+-]?\d+")
CHECKERS = ("auto", "builtin", "math-verify")
_default_checker = "auto"


def set_default_checker(checker: str) -> None:
    """The checker `is_correct` uses when none is passed (one switch for a whole program)."""
    global _default_checker
    _default_checker = _check_checker(checker)


def _check_checker(checker: str) -> str:
    if checker not in CHECKERS:
        raise RfprmError(f"unknown answer checker {checker!r}; expected one of {', '.join(CHECKERS)}")
    if checker == "math-verify" and not has_math_verify():
        raise RfprmError("answer checker 'math-verify' asked for, but the math-verify package is not "
                         "installed (pip install math-verify), or use checker='builtin'")
    return checker


@lru_cache(maxsize=1)
def has_math_verify() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=65536)
def math_verify_equal(answer: str, reference: str) -> bool:
    """math-verify's equivalence of two bare answers (each read as `$...$`), cached: sampling
    repeats the same wrong answers, and a sympy parse costs milliseconds. Its timeouts use
    signals, which only the main thread may set, so other threads run without them."""
    from math_verify import parse, verify
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(f"${reference}$", parsing_timeout=timeout)
    pred = parse(f"${answer}$", parsing_timeout=timeout)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))


def answers_equal(answer: str | int, reference: str | int, checker: str | None = None) -> bool:
    """Whether two bare answers are the same, by the chosen checker (see the module docstring)."""
    checker = _check_checker(checker or _default_checker)
    a, r = normalize_answer(answer), normalize_answer(reference)
    if a == r:
        return True
    if checker == "builtin" or (checker == "auto" and not has_math_verify()):
        return False
    if _INTEGER.fullmatch(a) and _INTEGER.fullmatch(r):
        return False                     # two different integers: no need to ask sympy
    return math_verify_equal(a, r)


def is_correct(response_text: str, answer: str | int, checker: str | None = None) -> bool:
    """The rule reward: the last \\boxed{} in the response equals the answer."""
    boxed = extract_boxed(response_text)
    return boxed is not None and answers_equal(boxed, answer, checker)


def format_trace(trajectory: str, response: str) -> str:
    """The policy's output text for a (trajectory, response) pair."""
    return f"{THINK_OPEN}\n{trajectory}\n{THINK_CLOSE}\n\n{response}"


def parse_trace(text: str) -> tuple[str, str] | None:
    """(trajectory, response) from a policy's output, or None when it is malformed: no
    `<think>` at the start, no `</think>`, a second tag, or an empty part."""
    body = text.lstrip()
    if not body.startswith(THINK_OPEN):
        return None
    body = body[len(THINK_OPEN):]
    trajectory, close, response = body.partition(THINK_CLOSE)
    if not close or THINK_OPEN in body or THINK_CLOSE in response:
        return None
    # format_trace puts exactly one newline inside each tag and a blank line after </think>.
    trajectory = trajectory.removeprefix("\n").removesuffix("\n")
    response = response.removeprefix("\n\n") if response.startswith("\n\n") else response.lstrip("\n")
    if not trajectory.strip() or not response.strip():
        return None
    return trajectory, response
