"""Problems of the built-in world: small multi-step integer arithmetic, e.g. `(7 + 5) * 3 - 4`.

A problem is an expression tree. Everything else -- its text, its answer, the ordered list of
operations a solver performs -- is derived from the tree, so there is one source of truth and
`parse_problem(problem.text) == problem` holds exactly. Notable choices:

- Operations are + - * only (no division: exactness would need rejection on every step, and
  the world does not need it). Operands drawn fresh from the problem are 1-20 for + and -,
  and 2-9 for * (so `x * 1` never appears as a real step and can be called a no-op).
- Every intermediate result lies in [1, 199]: non-negative as asked, and also never 0, so a
  real step never looks like the no-progress steps `x + 0 = x` that the wandering teacher
  writes. Both factors of a product are >= 2 for the same reason.
- Number of operations: 2 (45%), 3 (40%), 4 (15%) -- mostly short, as a 1-2M-parameter model
  solves 2-3 steps sometimes and 4 rarely.
- Shapes: the tree grows from a first `a op b`. Each further operation combines the running
  expression with a fresh number on its right (80%) or on its left (20%, e.g. `20 - (7 + 5)`);
  when two or more operations remain, 15% of the time the partner is itself a fresh `a op b`
  (e.g. `(3 + 4) * (5 - 2)`). Draws that break a bound are rejected and redrawn.
- Evaluation order is post-order, left child first: the order the rendered text is read in.
  Parentheses are printed only where the tree needs them: around a lower-precedence left
  child, and around a right child of lower *or equal* precedence (`a - (b + c)`, and also
  `a + (b + c)` so that re-parsing gives back the same tree and the same step order).
- `make_problems` is a pure function of (n, seed) through `random.Random(seed)`, and drops
  duplicates (by text) so a split is a set of distinct problems.
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from typing import NamedTuple, Union

from ..errors import RfprmError

N_OPS_WEIGHTS = {2: 0.45, 3: 0.40, 4: 0.15}   # how many operations a problem has
OP_WEIGHTS = {"+": 0.4, "-": 0.3, "*": 0.3}
ADD_OPERANDS = (1, 20)       # fresh operands of + and -
MUL_OPERANDS = (2, 9)        # fresh operands of *
MIN_VALUE, MAX_VALUE = 1, 199  # bounds on every intermediate result
NUMBER_ON_LEFT_P = 0.2       # `b op (expr)` instead of `(expr) op b`
SUBTREE_P = 0.15             # partner is a fresh `a op b` rather than a number
PRECEDENCE = {"+": 1, "-": 1, "*": 2}


# ----------------------------------------------------------------------------- the tree

@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


Node = Union[Num, BinOp]


class Ref(NamedTuple):
    """An operand that is the result of an earlier operation (its index in the step order)."""
    index: int


class Op(NamedTuple):
    """One performed operation `a op b = result`."""
    a: int
    op: str
    b: int
    result: int

    def __str__(self) -> str:
        return f"{self.a} {self.op} {self.b} = {self.result}"


def apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


def evaluate(node: Node) -> int:
    if isinstance(node, Num):
        return node.value
    return apply(node.op, evaluate(node.left), evaluate(node.right))


def count_ops(node: Node) -> int:
    return 0 if isinstance(node, Num) else 1 + count_ops(node.left) + count_ops(node.right)


def render(node: Node) -> str:
    """Infix text with the fewest parentheses that keep the tree (see the module docstring)."""
    if isinstance(node, Num):
        return str(node.value)
    prec = PRECEDENCE[node.op]
    left, right = render(node.left), render(node.right)
    if isinstance(node.left, BinOp) and PRECEDENCE[node.left.op] < prec:
        left = f"({left})"
    if isinstance(node.right, BinOp) and PRECEDENCE[node.right.op] <= prec:
        right = f"({right})"
    return f"{left} {node.op} {right}"


def plan_tree(node: Node) -> list[tuple[str, Num | Ref, Num | Ref]]:
    """The operations in evaluation order; an operand is a number or a Ref to an earlier step."""
    steps: list[tuple[str, Num | Ref, Num | Ref]] = []

    def visit(n: Node) -> Num | Ref:
        if isinstance(n, Num):
            return n
        left, right = visit(n.left), visit(n.right)
        steps.append((n.op, left, right))
        return Ref(len(steps) - 1)

    visit(node)
    return steps


def solve(node: Node, written: dict[int, int] | None = None) -> list[Op]:
    """Perform the plan. `written` forces the written result of some steps (a slip), and later
    steps then compute from the written value, as a solver who trusts their own work does."""
    written = written or {}
    ops: list[Op] = []
    for i, (op, left, right) in enumerate(plan_tree(node)):
        a = left.value if isinstance(left, Num) else ops[left.index].result
        b = right.value if isinstance(right, Num) else ops[right.index].result
        ops.append(Op(a, op, b, written.get(i, apply(op, a, b))))
    return ops


# ----------------------------------------------------------------------------- problems

@dataclass(frozen=True)
class Problem:
    tree: Node

    @functools.cached_property
    def expression(self) -> str:
        return render(self.tree)

    @property
    def text(self) -> str:
        return f"Compute {self.expression}."

    @functools.cached_property
    def plan(self) -> list[tuple[str, Num | Ref, Num | Ref]]:
        return plan_tree(self.tree)

    @functools.cached_property
    def ops(self) -> tuple[Op, ...]:
        return tuple(solve(self.tree))

    @property
    def answer(self) -> int:
        return self.ops[-1].result

    @property
    def op_sequence(self) -> list[str]:
        return [o.op for o in self.ops]

    def to_record(self) -> dict:
        return {"problem": self.text, "answer": str(self.answer)}


def _leaf(op: str, rng: random.Random) -> Num:
    lo, hi = MUL_OPERANDS if op == "*" else ADD_OPERANDS
    return Num(rng.randint(lo, hi))


def _combine(op: str, left: Node, right: Node) -> BinOp | None:
    """BinOp(op, left, right) if it keeps the world's bounds, else None."""
    a, b = evaluate(left), evaluate(right)
    if op == "*" and min(a, b) < 2:
        return None
    return BinOp(op, left, right) if MIN_VALUE <= apply(op, a, b) <= MAX_VALUE else None


def _choose(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _first_op(rng: random.Random) -> BinOp:
    while True:
        op = _choose(rng, OP_WEIGHTS)
        node = _combine(op, _leaf(op, rng), _leaf(op, rng))
        if node is not None:
            return node


def _grow(tree: Node, remaining: int, rng: random.Random) -> BinOp | None:
    """One more operation on top of `tree` (or None when 100 draws all broke a bound)."""
    for _ in range(100):
        op = _choose(rng, OP_WEIGHTS)
        partner = _first_op(rng) if remaining >= 2 and rng.random() < SUBTREE_P else _leaf(op, rng)
        if rng.random() < NUMBER_ON_LEFT_P:
            node = _combine(op, partner, tree)
        else:
            node = _combine(op, tree, partner)
        if node is not None:
            return node
    return None


def random_problem(rng: random.Random, n_ops: int | None = None) -> Problem:
    """One problem with `n_ops` operations (drawn from N_OPS_WEIGHTS when None)."""
    n_ops = n_ops or _choose(rng, N_OPS_WEIGHTS)
    while True:
        tree: Node | None = _first_op(rng)
        while tree is not None and count_ops(tree) < n_ops:
            tree = _grow(tree, n_ops - count_ops(tree), rng)
        if tree is not None:  # None: stuck (e.g. a large value and only * left): redraw
            return Problem(tree)


def make_problems(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
    """`n` distinct problems, a pure function of (n, seed); texts in `exclude` are skipped
    (pass a training split's texts to draw a disjoint held-out split)."""
    if n < 0:
        raise RfprmError(f"make_problems: n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen, problems = set(exclude), []
    for _ in range(50 * n + 1000):
        if len(problems) == n:
            break
        p = random_problem(rng)
        if p.text not in seen:
            seen.add(p.text)
            problems.append(p)
    if len(problems) < n:
        raise RfprmError(f"make_problems: only {len(problems)} distinct problems found for n={n}")
    return problems


# ----------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def _tokenize(expr: str) -> list[str]:
    tokens = []
    for number, char in _TOKEN.findall(expr.replace("×", "*")):
        tokens.append(number or char)
    return [t for t in tokens if not t.isspace()]


@functools.lru_cache(maxsize=4096)
def _parse_expression(expr: str) -> Node:
    """Recursive descent: expr = term (+|- term)*, term = factor (* factor)*, factor = N | (expr).
    Left-associative, so `a - b - c` is `(a - b) - c` as in Python."""
    tokens, pos = _tokenize(expr), 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end")
        pos += 1
        return tokens[pos - 1]

    def factor() -> Node:
        t = take()
        if t.isdigit():
            return Num(int(t))
        if t == "(":
            node = expression()
            if take() != ")":
                raise ValueError("missing )")
            return node
        raise ValueError(f"unexpected {t!r}")

    def term() -> Node:
        node = factor()
        while peek() == "*":
            take()
            node = BinOp("*", node, factor())
        return node

    def expression() -> Node:
        node = term()
        while peek() in ("+", "-"):
            node = BinOp(take(), node, term())
        return node

    node = expression()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r}")
    return node


def parse_problem(text: str) -> Problem:
    """Rebuild the Problem from its text ("Compute (7 + 5) * 3 - 4."); scorers only get text.
    Only the first line counts, so a prompt with a "Plan: ..." line below parses too."""
    lines = text.strip().splitlines()
    expr = lines[0].strip() if lines else ""
    expr = expr.removeprefix("Compute").strip().rstrip(".").strip()
    try:
        tree = _parse_expression(expr)
    except ValueError as e:
        raise RfprmError(f"cannot parse problem {text[:60]!r} ({e}): expected 'Compute <expression>.' "
                         "with whole numbers, + - * and parentheses") from None
    if isinstance(tree, Num):
        raise RfprmError(f"problem {text[:60]!r} has no operation: expected 'Compute <expression>.'")
    return Problem(tree)
