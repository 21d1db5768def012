"""Teachers of mixed quality: the distillation pool of the built-in world.

The paper selects SFT data from a pool written by reasoning models of uneven quality. Here
six teachers write R1-style traces, each a function `(problem, rng) -> Trace`. The teacher
and the first error are kept in the record for evaluation only; no scorer may read them.

| teacher    | thinking                                   | response             | answer | first_error      |
|------------|--------------------------------------------|----------------------|--------|------------------|
| clean      | every step right                           | mirrors              | right  | -1               |
| sloppy     | one slip, carried through later steps      | mirrors              | wrong  | the slip         |
| wandering  | right, plus 1-2 detours among the steps    | mirrors useful steps | right  | the first detour |
| misaligned | every step right                           | solves something else| wrong  | -1               |
| lucky      | a slip, then a compensating error or a jump| mirrors              | right  | the slip         |
| wrong_plan | every step locally sound, wrong plan       | mirrors              | wrong  | -1 (plan flaw)   |

Notable choices:
- Slips are natural ones: off by 1 (most often), 2 or 10, or a digit changed or two digits
  swapped. Later steps compute from the slipped value (the teacher trusts its own work). A
  slip is only used if every later result stays in [1, 999]; slipping the last step up by one
  is always possible, so the sloppy teacher never fails.
- Wandering detours: recomputing an earlier step, an operation on unrelated numbers, a
  no-op (`12 + 0 = 12`, `12 * 1 = 12`), or undoing the previous step (`12 - 5 = 7` after
  `7 + 5 = 12`). They come after the first real step (so the PRM's pairing can merge each
  into the step before it: the response has fewer steps than the thinking). Each detour is
  checked with the judge's tracker so that none accidentally performs a real operation.
- Misaligned responses: the teacher's thinking is fine but its response answers a
  misread problem (one number changed, 50%), a mis-copied operator (25%) or another
  problem altogether (25%), with the same number of steps. Its first_error is -1: the step
  judge sees nothing wrong in the thinking. This teacher is there for the alignment and
  trajectory-level signals to catch, not the step signal.
- Lucky: a slip at step k (never the last), then either a compensating error (an ancestor
  of step k writes its true result although its inputs carried the slip, 60%) or a jump (the
  next steps simply use the true values, as if the slip never happened, 40%). The answer is
  right, so an outcome-only filter keeps these traces.
- Wrong plan: the teacher misreads the problem's *structure*, then executes its misreading
  flawlessly: every step has right arithmetic and takes its operands from the problem's numbers
  or from results it wrote earlier, so a judge reading one step at a time finds nothing wrong.
  Misreadings, tried in a random order, the first that changes the answer and keeps every
  result in [1, 999] wins: precedence ignored, read left to right (`7 + 5 * 3` as
  `(7 + 5) * 3`, parentheses kept), the same with the parentheses ignored too (`20 - (7 + 5)`
  as `20 - 7 + 5`), or read from the right (`20 - 7 + 5` as `20 - (7 + 5)`, the classic sign
  slip). Only when none of the three changes the answer (e.g. `3 + 4 + 5`): one operator
  misread (`-` as `+`, `+` as `*`, `*` as `+`) on the first step where that works. Most of
  the world's problems read the same in every order, so over 5000 problems the misreadings
  are: operator 61%, from the right 22%, parentheses ignored 11%, precedence ignored 6%. The response mirrors the thinking, so alignment is high. Its first_error
  is -1: step-level evaluation counts these traces as flawless (no step is locally wrong; the
  world's exact judge, which knows the problem's plan, does score the off-plan steps 0.4). The
  flaw is the trace's: evaluation finds these traces by `teacher == "wrong_plan"` and reports
  them as a trace-level AUC (sound traces vs wrong-plan traces), the case the paper's
  template-guided trajectory reward is for (its extracted template follows the wrong plan).
- `make_traces` assigns teachers in exact proportions (largest remainder), then shuffles,
  so a pool of 1000 under DEFAULT_MIX has exactly 300 clean and 100 wrong-plan traces.
"""
from __future__ import annotations

import random
from typing import Callable

from ..errors import RfprmError
from .judge import StepTracker
from .problems import (PRECEDENCE, BinOp, Node, Num, Op, Problem, apply, make_problems, random_problem,
                       render, solve)
from .traces import Trace, think_step, written_trace

DEFAULT_MIX = {"clean": 0.30, "sloppy": 0.20, "wandering": 0.15, "misaligned": 0.10, "lucky": 0.15,
               "wrong_plan": 0.10}
MAX_SLIPPED_VALUE = 999


# ----------------------------------------------------------------------------- slips

def slipped_values(value: int, rng: random.Random) -> list[int]:
    """Plausible wrong results for `value`, in a random order that favours +-1 (listed twice,
    so it tends to come first). value + 1 is always among them."""
    candidates = [value + 1, value - 1, value + 1, value - 1, value + 2, value - 2,
                  value + 10, value - 10]
    digits = str(value)
    for i, d in enumerate(digits):                     # one digit off by one
        for nd in (int(d) - 1, int(d) + 1):
            if 0 <= nd <= 9 and not (i == 0 and nd == 0):
                candidates.append(int(digits[:i] + str(nd) + digits[i + 1:]))
    if len(digits) == 2 and digits[0] != digits[1] and digits[1] != "0":
        candidates.append(int(digits[::-1]))           # two digits swapped
    rng.shuffle(candidates)
    return [c for c in dict.fromkeys(candidates) if c >= 1 and c != value]


def _in_bounds(ops: list[Op]) -> bool:
    return all(1 <= o.result <= MAX_SLIPPED_VALUE for o in ops)


def _slipped_solution(problem: Problem, steps: list[int], rng: random.Random,
                      extra: Callable[[int], dict[int, int]] = lambda k: {}) -> tuple[int, list[Op]] | None:
    """Slip one of `steps` (tried in random order); `extra(k)` forces more written results.
    Returns (k, ops) for the first slip whose solution stays in bounds, or None."""
    for k in rng.sample(steps, len(steps)):
        for wrong in slipped_values(problem.ops[k].result, rng):
            ops = solve(problem.tree, {k: wrong, **extra(k)})
            if _in_bounds(ops):
                return k, ops
    return None


# ----------------------------------------------------------------------------- teachers

def clean(problem: Problem, rng: random.Random) -> Trace:
    return written_trace(list(problem.ops))


def sloppy(problem: Problem, rng: random.Random) -> Trace:
    # never None: the last step written one too high has nothing after it to leave the bounds
    k, ops = _slipped_solution(problem, list(range(len(problem.ops))), rng)
    return written_trace(ops, first_error=k)


def _ancestors(problem: Problem, k: int) -> list[int]:
    """Indices of the steps that consume step k's result, directly or further up."""
    consumer = {}
    for i, (_, left, right) in enumerate(problem.plan):
        for arg in (left, right):
            if not isinstance(arg, Num):
                consumer[arg.index] = i
    chain = []
    while k in consumer:
        k = consumer[k]
        chain.append(k)
    return chain


def lucky(problem: Problem, rng: random.Random) -> Trace:
    not_last = list(range(len(problem.ops) - 1))

    def compensate(k: int) -> dict[int, int]:  # an ancestor writes its true result anyway
        j = rng.choice(_ancestors(problem, k))
        return {j: problem.ops[j].result}

    if rng.random() < 0.6:
        found = _slipped_solution(problem, not_last, rng, compensate)
        if found:
            k, ops = found
            return written_trace(ops, first_error=k)
    k = rng.choice(not_last)  # jump: later steps carry on from the true value
    ops = list(problem.ops)
    ops[k] = ops[k]._replace(result=slipped_values(ops[k].result, rng)[0])
    return written_trace(ops, first_error=k)


def _detours(problem: Problem, done: list[Op], rng: random.Random) -> list[Op]:
    """Candidate detour steps after the useful steps `done`, in random order."""
    last = done[-1]
    numbers = {n for o in problem.ops for n in (o.a, o.b, o.result)}
    unrelated = [n for n in range(2, 21) if n not in numbers]
    out = [rng.choice(done),                                       # recompute a done step
           Op(last.result, "+", 0, last.result),                   # no-ops
           Op(last.result, "*", 1, last.result)]
    if last.op == "+":                                             # undo the last step
        out.append(Op(last.result, "-", last.b, last.a))
    elif last.op == "-":
        out.append(Op(last.result, "+", last.b, last.a))
    if len(unrelated) >= 2:                                        # unrelated numbers
        a, b = rng.sample(unrelated, 2)
        op = rng.choice(["+", "*"])
        out.append(Op(a, op, b, apply(op, a, b)))
    rng.shuffle(out)
    return out


def wandering(problem: Problem, rng: random.Random) -> Trace:
    n = len(problem.ops)
    n_detours = 1 if rng.random() < 0.7 else 2
    after = sorted(rng.choices(range(1, n + 1), k=n_detours))  # detour after this many real steps
    tracker = StepTracker(problem)
    steps: list[str] = []
    first_error = -1
    for i, op in enumerate(problem.ops):
        steps.append(think_step(len(steps), op))
        tracker.observe(op)
        for _ in range(after.count(i + 1)):
            # a detour must not perform any operation of the problem, even loosely
            detour = next(d for d in _detours(problem, list(problem.ops[:i + 1]), rng)
                          if tracker.match(d, grounded=False) is None)  # `x + 0 = x` always is
            if first_error == -1:
                first_error = len(steps)
            steps.append(think_step(len(steps), detour))
    mirrored = written_trace(list(problem.ops))
    return Trace(steps, mirrored.response_steps, first_error)


def _misread(problem: Problem, rng: random.Random) -> Problem:
    """The problem with one number changed (50%), one operator changed (25%), or another
    problem with the same number of steps (25%)."""
    kind = rng.random()
    if kind >= 0.75:
        return random_problem(rng, len(problem.ops))
    nodes: list[tuple[Node, tuple[str, ...]]] = []

    def collect(node: Node, path: tuple[str, ...]) -> None:
        nodes.append((node, path))
        if isinstance(node, BinOp):
            collect(node.left, path + ("left",))
            collect(node.right, path + ("right",))

    collect(problem.tree, ())
    want = Num if kind < 0.5 else BinOp
    node, path = rng.choice([(n, p) for n, p in nodes if isinstance(n, want)])
    if isinstance(node, Num):  # a near miss: off by 1-3
        new: Node = Num(rng.choice([v for v in range(node.value - 3, node.value + 4)
                                    if v >= 1 and v != node.value]))
    else:
        new = BinOp(rng.choice([o for o in "+-*" if o != node.op]), node.left, node.right)

    def replace(tree: Node, path: tuple[str, ...]) -> Node:
        if not path:
            return new
        left = replace(tree.left, path[1:]) if path[0] == "left" else tree.left
        right = replace(tree.right, path[1:]) if path[0] == "right" else tree.right
        return BinOp(tree.op, left, right)

    return Problem(replace(problem.tree, path))


def misaligned(problem: Problem, rng: random.Random) -> Trace:
    while True:
        other = _misread(problem, rng)
        ops = solve(other.tree)
        if _in_bounds(ops) and ops[-1].result != problem.answer:
            return written_trace(list(problem.ops), response=ops)


def _read_flat(node: Node, keep_parentheses: bool, right_to_left: bool = False) -> Node:
    """The tree a reader builds who applies the operators in reading order (or from the right),
    ignoring precedence (and, unless `keep_parentheses`, the parentheses too)."""
    def tokens(n: Node, top: bool) -> list:
        if isinstance(n, Num):
            return [n]
        left = tokens(n.left, False)
        right = tokens(n.right, False)
        # where render() prints parentheses, a reader who keeps them sees one unit
        if keep_parentheses and isinstance(n.right, BinOp) and PRECEDENCE[n.right.op] <= PRECEDENCE[n.op]:
            right = [_read_flat(n.right, True, right_to_left)]
        if keep_parentheses and isinstance(n.left, BinOp) and PRECEDENCE[n.left.op] < PRECEDENCE[n.op]:
            left = [_read_flat(n.left, True, right_to_left)]
        return [*left, n.op, *right]

    items = tokens(node, True)
    if right_to_left:                      # a op (b op (c op d))
        tree = items[-1]
        for i in range(len(items) - 2, 0, -2):
            tree = BinOp(items[i], items[i - 1], tree)
        return tree
    tree = items[0]                        # ((a op b) op c) op d
    for i in range(1, len(items), 2):
        tree = BinOp(items[i], tree, items[i + 1])
    return tree


_OPERATOR_MISREAD = {"-": "+", "+": "*", "*": "+"}


def _operator_misreads(node: Node) -> list[Node]:
    """The tree with one operator misread, each position in evaluation order."""
    out: list[Node] = []

    def rebuild(n: Node, target: list[int]) -> Node:
        if isinstance(n, Num):
            return n
        left, right = rebuild(n.left, target), rebuild(n.right, target)
        target[0] -= 1
        op = _OPERATOR_MISREAD[n.op] if target[0] == -1 else n.op
        return BinOp(op, left, right)

    n_ops = len(solve(node))
    for k in range(n_ops):
        out.append(rebuild(node, [k]))
    return out


def wrong_plan_tree(problem: Problem, rng: random.Random) -> Node:
    """A misreading of the problem's structure whose answer differs and whose every result
    stays in [1, MAX_SLIPPED_VALUE] (see the module docstring for the order they are tried)."""
    flat = [_read_flat(problem.tree, True), _read_flat(problem.tree, False),
            _read_flat(problem.tree, True, right_to_left=True)]
    rng.shuffle(flat)
    for tree in [*flat, *_operator_misreads(problem.tree)]:
        ops = solve(tree)
        if _in_bounds(ops) and ops[-1].result != problem.answer and render(tree) != problem.expression:
            return tree
    raise RfprmError(f"no wrong plan for {problem.text!r}")  # never seen on the world's problems


def wrong_plan(problem: Problem, rng: random.Random) -> Trace:
    return written_trace(solve(wrong_plan_tree(problem, rng)))


TEACHERS: dict[str, Callable[[Problem, random.Random], Trace]] = {
    "clean": clean, "sloppy": sloppy, "wandering": wandering, "misaligned": misaligned,
    "lucky": lucky, "wrong_plan": wrong_plan,
}


# ----------------------------------------------------------------------------- the pool

def parse_mix(spec: str) -> dict[str, float]:
    """`clean=0.4,sloppy=0.6` -> weights (normalised to sum 1; teachers not named get 0)."""
    mix = {}
    for item in spec.split(","):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in TEACHERS:
            raise RfprmError(f"bad --mix item {item.strip()!r}: expected teacher=weight with teacher "
                             f"one of {', '.join(TEACHERS)}")
        try:
            mix[name] = float(value)
        except ValueError:
            raise RfprmError(f"bad --mix weight {value.strip()!r} for {name}: expected a number") from None
    return check_mix(mix)


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    bad = [k for k in mix if k not in TEACHERS]
    if bad:
        raise RfprmError(f"unknown teacher {bad[0]!r} in mix: expected one of {', '.join(TEACHERS)}")
    if any(not (w >= 0) or w == float("inf") for w in mix.values()) or sum(mix.values()) <= 0:
        raise RfprmError(f"bad mix {mix}: weights must be finite, >= 0, and not all 0")
    total = sum(mix.values())
    return {k: w / total for k, w in mix.items()}


def teacher_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Exact counts for n traces: floor of each share, remainders to the largest fractions."""
    mix = check_mix(mix)
    counts = {k: int(n * w) for k, w in mix.items()}
    by_remainder = sorted(mix, key=lambda k: n * mix[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def make_traces(n: int, seed: int, mix: dict[str, float] = DEFAULT_MIX,
                exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """A pool of n trace records over n distinct problems (none of whose texts is in `exclude`),
    a pure function of (n, seed, mix, exclude). Keys: problem, trajectory, response, answer,
    teacher, first_error."""
    problems = make_problems(n, seed, exclude=exclude)
    rng = random.Random(f"traces:{seed}")
    teachers = [k for k, c in teacher_counts(n, mix).items() for _ in range(c)]
    rng.shuffle(teachers)
    records = []
    for problem, teacher in zip(problems, teachers):
        trace = TEACHERS[teacher](problem, rng)
        records.append({"problem": problem.text, "trajectory": trace.trajectory,
                        "response": trace.response, "answer": str(problem.answer),
                        "teacher": teacher, "first_error": trace.first_error})
    return records
