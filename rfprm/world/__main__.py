"""Write the built-in world's data as JSONL.

    python -m rfprm.world problems --n 1000 --seed 0 --out problems.jsonl
    python -m rfprm.world traces --n 1000 --seed 0 --out traces.jsonl --mix clean=0.5,sloppy=0.5

Without --out the records go to stdout and the summary line to stderr. Bad input (a count
below 1, a negative seed, an unwritable --out, a malformed --mix) is one `error: ...` line,
exit status 2, and no file.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

from ..errors import RfprmError, atomic_file, check_writable, cli_main
from .problems import make_problems
from .teachers import DEFAULT_MIX, TEACHERS, make_traces, parse_mix

MAX_N = 1_000_000


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as an RfprmError (one line, exit 2) instead of
    printing its usage block."""

    def error(self, message: str):
        raise RfprmError(f"{message} (see {self.prog} --help)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m rfprm.world",
                     description="Write the built-in arithmetic world's problems or traces as JSONL.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{problems,traces}")
    default_mix = ",".join(f"{k}={w}" for k, w in DEFAULT_MIX.items())
    for name, help_ in [("problems", 'problem records {"problem", "answer"}'),
                        ("traces", 'trace records {"problem", "trajectory", "response", "answer", '
                                   '"teacher", "first_error"} from a mix of teachers')]:
        p = sub.add_parser(name, help=help_, description=f"Write {help_} as JSONL.")
        p.add_argument("--n", type=int, default=1000, help="how many records (default 1000)")
        p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
        p.add_argument("--out", default="-", help="output JSONL file (default: stdout)")
        if name == "traces":
            p.add_argument("--mix", default=None,
                           help=f"teacher weights, e.g. clean=0.5,sloppy=0.5; teachers not named get 0 "
                                f"(default {default_mix}; teachers: {', '.join(TEACHERS)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if not 1 <= args.n <= MAX_N:
        raise RfprmError(f"--n must be between 1 and {MAX_N}, got {args.n}")
    if args.seed < 0:
        raise RfprmError(f"--seed must be >= 0, got {args.seed}")
    to_stdout = args.out == "-"
    if not to_stdout and check_writable(args.out).is_dir():
        raise RfprmError(f"--out {args.out} is a directory: expected a file name")

    if args.command == "problems":
        problems = make_problems(args.n, args.seed)
        records = [p.to_record() for p in problems]
        counts = collections.Counter(len(p.ops) for p in problems)
        summary = f"{len(records)} problems (" + ", ".join(f"{k} ops {counts[k]}" for k in sorted(counts)) + ")"
    else:
        mix = parse_mix(args.mix) if args.mix is not None else DEFAULT_MIX
        records = make_traces(args.n, args.seed, mix)
        counts = collections.Counter(r["teacher"] for r in records)
        summary = f"{len(records)} traces (" + ", ".join(f"{k} {counts[k]}" for k in TEACHERS) + ")"

    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if to_stdout:
        sys.stdout.write(lines)
        print(f"wrote {summary} to stdout", file=sys.stderr)
    else:
        with atomic_file(args.out) as f:
            f.write(lines)
        print(f"wrote {summary} to {args.out}")
    return 0


if __name__ == "__main__":
    cli_main(main)
