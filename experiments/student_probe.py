"""Why select_data.py's students learn so little in their budget: where a base model's arithmetic
lives, and what one student learns from one pick.

    python -m experiments.student_probe --part base [--base tiny-base]
    python -m experiments.student_probe --part student --pick clean --steps 250 --lr 3e-3 [--offset 1000 --seed 0]
    python -m experiments.student_probe --quick

`--part base` asks the base the first operation of each of --n held-out problems three ways
and prints the share it gets right:
- `fact`: as a fact on its own (user `Compute a op b.`), the form the tiny-base recipe teaches;
- `answer`: with the problem as the user turn and the assistant turn started with `a op b =`;
- `trace`: the same, the assistant turn started as a thinking trace (`<think>` / `First, a op b =`).
A base that computes only in the first form has tied its arithmetic to the prompt, and a student
must learn it afresh inside a trace, from the traces' own equations.

`--part student` trains one student exactly as select_data.py does (`rfprm.selection.train_student`,
the default StudentSpec but for --steps / --lr) on --k traces of the default pool: the `clean`
teacher's (an upper bound for any selection) or a `random` draw, and prints its held-out answer
accuracy and the share of its own thinking steps the world's exact judge rates sound (an
evaluation-only use of the judge: no student or selection sees it).

A diagnostic of the built-in world (its teachers, step format and exact judge).
"""
import argparse
import random
import re
import time

import torch

from rfprm.answers import parse_trace
from rfprm.checkpoint import load_model
from rfprm.errors import RfprmError, cli_main, resolve_path
from rfprm.generate import chat_complete, generate
from rfprm.selection import StudentSpec, train_student
from rfprm.steps import split_steps
from rfprm.tokenizer import load_tokenizer
from rfprm.world import make_traces
from rfprm.world.judge import judge_steps
from rfprm.world.task import MAX_NEW_TOKENS, TASK, eval_problems, held_out_texts

FORMS = ("fact", "answer", "trace")


def first_number(text: str) -> int | None:
    m = re.match(r"\s*(-?\d+)", text)
    return int(m.group(1)) if m else None


def base_arithmetic(model, tok, problems) -> dict:
    """Share of first operations computed right, asked in each of FORMS (greedy)."""
    right = {}
    for form in FORMS:
        prompts = []
        for p in problems:
            op = p.ops[0]
            user = f"Compute {op.a} {op.op} {op.b}." if form == "fact" else TASK.prompt(p.text)
            start = {"fact": "", "answer": f"{op.a} {op.op} {op.b} =",
                     "trace": f"<think>\nFirst, {op.a} {op.op} {op.b} ="}[form]
            ids = tok.chat([{"role": "user", "content": user}], add_generation_prompt=True)
            prompts.append(ids + (tok.encode(start) if start else []))
        outs = [tok.decode(o) for o in generate(model, prompts, max_new_tokens=12, temperature=0.0)]
        if form == "fact":   # the answer line repeats the operation: `a op b = r, ...`
            outs = [o.split("=", 1)[1] if "=" in o else "" for o in outs]
        right[form] = sum(first_number(o) == p.ops[0].result for o, p in zip(outs, problems)) / len(problems)
    return right


def sound_share(outputs: list[str], problems) -> tuple[float, int]:
    """Share of the students' thinking steps the exact judge rates sound (1.0), and their count;
    an output without a parseable trace counts as one unsound step."""
    sound = total = 0
    for text, p in zip(outputs, problems):
        trace = parse_trace(text)
        steps = split_steps(trace[0]) if trace else []
        verdicts = judge_steps(p.text, steps) if steps else [0.0]
        sound += sum(v == 1.0 for v in verdicts)
        total += len(verdicts)
    return sound / total, total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("base", "student"), default="base")
    ap.add_argument("--base", default="tiny-base", help="the base model (dir or shipped name)")
    ap.add_argument("--pick", choices=("clean", "random"), default="clean", help="--part student: its traces")
    ap.add_argument("--k", type=int, default=1000, help="--part student: traces it trains on")
    ap.add_argument("--steps", type=int, default=StudentSpec.steps)
    ap.add_argument("--lr", type=float, default=StudentSpec.lr)
    ap.add_argument("--bucket", type=int, default=StudentSpec.bucket, help="--part student: 1 for plain batches")
    ap.add_argument("--eager", action="store_true", help="--part student: train without torch.compile")
    ap.add_argument("--n", type=int, default=200, help="held-out problems asked")
    ap.add_argument("--offset", type=int, default=0, help="start at this reserved problem (select_data.py asks "
                    "the first 200; from 1000 on they serve as validation problems)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="a few problems and steps (for the tests)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.k = 8, 4, 16
    if min(args.n, args.steps, args.k, args.bucket) < 1 or args.offset < 0 or not args.lr > 0:
        raise RfprmError("--n, --steps, --k, --bucket must be >= 1, --offset >= 0 and --lr > 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base_dir = resolve_path(args.base)
    tok, base = load_tokenizer(base_dir), load_model(base_dir)
    problems = eval_problems(args.offset + args.n)[args.offset:]
    parts = ("base", "student") if args.quick else (args.part,)
    if "base" in parts:
        right = base_arithmetic(base, tok, problems)
        print(f"{args.base}: first operation of {args.n} reserved problems (from {args.offset}) computed right, "
              "asked as")
        for form in FORMS:
            print(f"  {form:<7}{100 * right[form]:6.1f}%")
    if "student" in parts:
        pool = make_traces(4000 if not args.quick else 200, 0, exclude=held_out_texts())  # select_data's default pool
        records = (random.Random(args.seed).sample(pool, args.k) if args.pick == "random"
                   else [r for r in pool if r["teacher"] == "clean"][: args.k])
        spec = StudentSpec(steps=args.steps, lr=args.lr, bucket=args.bucket, compile=not (args.quick or args.eager))
        t0 = time.time()
        student = train_student(base, tok, records, spec, args.seed, desc=f"{args.pick} student", task=TASK)
        outputs = chat_complete(student, tok, [TASK.prompt(p.text) for p in problems], max_new_tokens=MAX_NEW_TOKENS)
        acc = sum(TASK.is_correct(o, str(p.answer)) for o, p in zip(outputs, problems)) / len(problems)
        share, n_steps = sound_share(outputs, problems)
        print(f"student on {len(records)} {args.pick} traces, {args.steps} steps at lr {args.lr:g}, "
              f"bucket {args.bucket}, {'eager' if args.eager else 'compiled'}, seed {args.seed}: "
              f"answers {100 * acc:.1f}% right, {100 * share:.1f}% of its {n_steps} thinking steps sound "
              f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    cli_main(main)
