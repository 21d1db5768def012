"""Text-level reasoning steps: splitting, `<think>` blocks, and pairing thinking with response.

ReasonFlux-PRM scores a trajectory-response pair step by step (arXiv 2506.18896, the trajectory-response pair):
the trajectory and the response are split on blank lines, and thinking step t is paired with
response step t -- the pairing the alignment label cos(Φ(s_t), Φ(a_t)) is computed on.

Notable choices:
- A step is a block of text between blank lines. A line holding only spaces or tabs counts as
  blank, and "\\r\\n" counts as "\\n", so text pasted from elsewhere splits the way it looks.
  Steps are stripped; empty ones are dropped. `join_steps` is the inverse for stripped steps
  without blank lines inside them.
- `split_think` accepts a text with `</think>` but no `<think>`: DeepSeek-R1-style chat
  templates put `<think>` in the prompt, so the model's own text starts inside the thinking.
  Every other unbalanced use of the tags is an error.
- When the counts differ the authors merge a surplus step into the step before it until the
  counts match; which step is surplus is open in the paper. `align_pairs` offers two rules:
    * no `similarity` given: merge from the tail -- the surplus steps at the end fold into the
      last kept step. Deterministic and needs nothing but the counts.
    * `similarity(thinking_text, response_text) -> float` given: greedy. Each round merges the
      step (index >= 1) into its predecessor whose merge gives the highest mean similarity of
      the pairing, and repeats until the counts match. While there are still too many groups,
      a candidate is scored as if the tail rule finished the job, so every candidate is judged
      on a full 1:1 pairing. Ties go to the later step, so a similarity that cannot tell the
      candidates apart gives the tail rule's answer. O(surplus · steps · pairs) calls,
      memoised on the text pair.
- The same rules merge surplus *response* steps when the response is the longer side; the
  result is symmetric: a list of (thinking indices, response indices) pairs, one side always a
  single index. `align_steps` gives the per-response-step view shared across rfprm.
"""
from __future__ import annotations

import math
import re
from typing import Callable

from .answers import THINK_CLOSE, THINK_OPEN, parse_trace
from .errors import RfprmError

STEP_SEP = "\n\n"
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

Similarity = Callable[[str, str], float]
Pair = tuple[list[int], list[int]]  # (thinking step indices, response step indices)


# ----------------------------------------------------------------------------- splitting

def split_steps(text: str) -> list[str]:
    """Steps of a trajectory or response: blocks between blank lines, stripped, empties dropped."""
    text = text.replace("\r\n", "\n")
    return [s.strip() for s in _BLANK_LINE.split(text) if s.strip()]


def join_steps(steps: list[str]) -> str:
    """Steps back to text, one blank line between them (inverse of `split_steps`)."""
    return STEP_SEP.join(steps)


def split_think(text: str) -> tuple[str, str]:
    """(trajectory, response) from `<think>trajectory</think>response`, both stripped.

    Text before `<think>` must be blank; `<think>` may be missing (the R1 chat template puts
    it in the prompt). Either part may come back empty: callers decide whether that is fine.
    """
    n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if n_close == 0:
        found = f"'{THINK_OPEN}' without '{THINK_CLOSE}'" if n_open else "no think tags"
        raise RfprmError(f"expected one <think>...</think> block, found {found}")
    if n_open > 1 or n_close > 1:
        raise RfprmError(f"expected one <think>...</think> block, found {n_open} '{THINK_OPEN}' "
                         f"and {n_close} '{THINK_CLOSE}'")
    head, _, response = text.partition(THINK_CLOSE)
    if THINK_OPEN in response:
        raise RfprmError(f"'{THINK_OPEN}' comes after '{THINK_CLOSE}'")
    if n_open:
        before, _, head = head.partition(THINK_OPEN)
        if before.strip():
            raise RfprmError(f"text before '{THINK_OPEN}': {before.strip()[:40]!r}")
    return head.strip(), response.strip()


def split_completion(text: str) -> tuple[str, str] | None:
    """(trajectory, response) of a sampled completion, or None when it is not a trace: a
    `<think>...</think>response` text (`rfprm.answers.parse_trace`, strict), or, with no
    `<think>` at all, a text that `split_think` splits at its one `</think>` (an R1-style chat
    template opens `<think>` in the prompt). Both parts must be non-empty."""
    parsed = parse_trace(text)
    if parsed is not None or THINK_OPEN in text:
        return parsed
    try:
        trajectory, response = split_think(text)
    except RfprmError:
        return None
    return (trajectory, response) if trajectory and response else None


# ----------------------------------------------------------------------------- alignment

def _tail_rule(groups: list[list[int]], n: int) -> list[list[int]]:
    """Fold groups n-1, n, ... into one, leaving n groups."""
    return groups[:n - 1] + [[i for g in groups[n - 1:] for i in g]]


def _merge_long_side(long: list[str], short: list[str], score: Similarity | None) -> list[list[int]]:
    """Contiguous groups of `long`'s indices, one per step of `short` (see the module docstring).
    `score(long_text, short_text)` already puts the texts in the caller's order."""
    groups = [[i] for i in range(len(long))]
    n = len(short)
    if score is None:
        return _tail_rule(groups, n)

    def mean_similarity(candidate: list[list[int]]) -> float:
        full = _tail_rule(candidate, n)
        return sum(score(join_steps([long[i] for i in g]), short[t]) for t, g in enumerate(full)) / n

    while len(groups) > n:
        best, best_value = None, float("-inf")
        for g in range(1, len(groups)):  # merge group g into group g - 1
            candidate = groups[:g - 1] + [groups[g - 1] + groups[g]] + groups[g + 1:]
            value = mean_similarity(candidate)
            if value >= best_value:  # `>=`: ties go to the later step (the tail rule)
                best, best_value = candidate, value
        groups = best
    return groups


def _memoised(similarity: Similarity) -> Similarity:
    """The greedy rule asks for the same text pair many times; an encoder call is not cheap."""
    memo: dict[tuple[str, str], float] = {}

    def score(thinking_text: str, response_text: str) -> float:
        key = (thinking_text, response_text)
        if key not in memo:
            value = float(similarity(thinking_text, response_text))
            if not math.isfinite(value):
                raise RfprmError(f"similarity returned {value} for {thinking_text[:30]!r} and "
                                 f"{response_text[:30]!r}, expected a finite number")
            memo[key] = value
        return memo[key]
    return score


def align_pairs(thinking: list[str], response: list[str],
                similarity: Similarity | None = None) -> list[Pair]:
    """Pair thinking steps with response steps: a list of (thinking indices, response indices),
    in order, covering both sides, min(len) pairs. The longer side's surplus steps are merged into
    the step before them (tail rule without `similarity`, greedy with it: see the docstring)."""
    if not thinking or not response:
        raise RfprmError(f"cannot align steps: {len(thinking)} thinking and {len(response)} "
                         f"response steps, expected at least one of each")
    score = None if similarity is None else _memoised(similarity)
    if len(thinking) >= len(response):
        groups = _merge_long_side(thinking, response, score)
        return [(g, [t]) for t, g in enumerate(groups)]
    swapped = None if score is None else (lambda r, t: score(t, r))
    groups = _merge_long_side(response, thinking, swapped)
    return [([t], g) for t, g in enumerate(groups)]


def align_steps(thinking: list[str], response: list[str],
                similarity: Similarity | None = None) -> list[list[int]]:
    """For each response step t, the thinking steps paired with it (len == len(response)).

    With more thinking steps, the groups split the thinking indices into contiguous runs. With
    more response steps, several response steps were merged into one group, so each of them
    maps to that group's single thinking step, which then appears in several entries.
    """
    per_response: list[list[int]] = []
    for thinking_ids, response_ids in align_pairs(thinking, response, similarity):
        per_response += [list(thinking_ids) for _ in response_ids]
    return per_response


def paired_response_steps(thinking: list[str], response: list[str],
                          similarity: Similarity | None = None) -> list[str]:
    """For each thinking step, the response text it is paired with (merged response steps are
    joined by a blank line): the a_t of the alignment label for s_t."""
    paired = [""] * len(thinking)
    for thinking_ids, response_ids in align_pairs(thinking, response, similarity):
        text = join_steps([response[r] for r in response_ids])
        for i in thinking_ids:
            paired[i] = text
    return paired
