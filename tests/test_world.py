"""The built-in world: problems, traces, teachers, judge, templates and the CLI (no torch)."""
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rfprm.errors import RfprmError, cli_main
from rfprm.world import (DEFAULT_MIX, IRRELEVANT, UNPARSEABLE, USEFUL, WRONG, extract_boxed,
                         extract_template, format_trace, is_correct, judge_step, judge_steps,
                         make_problems, make_traces, normalize_answer, parse_mix, parse_problem,
                         parse_trace, problem_prompt, problem_template, split_steps,
                         teacher_counts, template_ops, template_prompt, world_corpus,
                         wrong_template)
from rfprm.world.__main__ import main as world_main
from rfprm import world
from rfprm.world.problems import Num

ROOT = Path(__file__).resolve().parents[1]
ALL_TEACHERS_EVENLY = {k: 1.0 for k in DEFAULT_MIX}


@pytest.fixture(scope="module")
def pool():
    """720 traces, 120 per teacher."""
    return make_traces(720, seed=11, mix=ALL_TEACHERS_EVENLY)


def by_teacher(pool, name):
    records = [r for r in pool if r["teacher"] == name]
    assert len(records) == 120
    return records


def step_scores(record):
    return judge_steps(record["problem"], split_steps(record["trajectory"]))


# ----------------------------------------------------------------------------- problems

def test_problems_are_reproducible_and_distinct():
    a, b = make_problems(300, seed=5), make_problems(300, seed=5)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in make_problems(300, seed=6)] != [p.text for p in a]
    assert len({p.text for p in a}) == 300
    held_out = make_problems(100, seed=5, exclude={p.text for p in a})
    assert not {p.text for p in held_out} & {p.text for p in a}


def test_answers_match_python_and_stay_in_bounds():
    problems = make_problems(1000, seed=0)
    for p in problems:
        assert p.text == f"Compute {p.expression}."
        assert eval(p.expression) == p.answer  # the expression is plain Python arithmetic
        assert p.to_record() == {"problem": p.text, "answer": str(p.answer)}
        assert all(1 <= op.result <= 199 for op in p.ops)
        for (op, left, right), done in zip(p.plan, p.ops):
            assert op == done.op and done.result == eval(f"{done.a} {op} {done.b}")
            for arg in (left, right):  # numbers drawn fresh from the problem
                if isinstance(arg, Num):
                    assert 2 <= arg.value <= 9 if op == "*" else 1 <= arg.value <= 20
    n_ops = Counter(len(p.ops) for p in problems)
    assert set(n_ops) == {2, 3, 4} and n_ops[4] < n_ops[3] and n_ops[4] < n_ops[2]
    assert sum("(" in p.text for p in problems) > 100  # parentheses do occur


def test_parse_problem_round_trips():
    for p in make_problems(500, seed=1):
        assert parse_problem(p.text) == p
        assert parse_problem(template_prompt(p.text, problem_template(p))) == p
    p = parse_problem("Compute (7 + 5) * 3 - 4.")
    assert p.answer == 32 and [str(o) for o in p.ops] == ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32"]
    assert parse_problem("Compute 20 - (7 + 5).").ops[0] == (7, "+", 5, 12)
    assert parse_problem("Compute 10 - 3 - 2.").answer == 5  # left-associative like Python
    for bad in ["Compute (7 + 5.", "Compute 7 +.", "hello", "Compute 7.", ""]:
        with pytest.raises(RfprmError, match="problem"):
            parse_problem(bad)


# ----------------------------------------------------------------------------- traces

def test_trace_format_round_trips(pool):
    for r in pool:
        text = format_trace(r["trajectory"], r["response"])
        assert text.startswith("<think>\n") and "\n</think>\n\n" in text
        assert parse_trace(text) == (r["trajectory"], r["response"])
    lengths = [len(format_trace(r["trajectory"], r["response"])) for r in pool if r["teacher"] == "clean"]
    assert 100 < sum(lengths) / len(lengths) < 250  # compact: tokens cost CPU time
    for bad in ["no tags", "<think>\nA\n", "A\n</think>\n\nB", "<think>\nA\n</think>\n\n",
                "<think>\n\n</think>\n\nB", "<think>\nA\n</think>\n\nB</think>",
                "<think>\nA<think>\n</think>\n\nB"]:
        assert parse_trace(bad) is None, bad


def test_make_traces_reproducible_with_exact_counts():
    a = make_traces(200, seed=3)
    assert a == make_traces(200, seed=3) and a != make_traces(200, seed=4)
    assert set(a[0]) == {"problem", "trajectory", "response", "answer", "teacher", "first_error"}
    assert Counter(r["teacher"] for r in a) == {"clean": 60, "sloppy": 40, "wandering": 30,
                                               "misaligned": 20, "lucky": 30, "wrong_plan": 20}
    assert teacher_counts(7, {"clean": 1, "sloppy": 1}) in ({"clean": 4, "sloppy": 3},
                                                            {"clean": 3, "sloppy": 4})
    assert {r["teacher"] for r in make_traces(50, 0, parse_mix("clean=0,lucky=2"))} == {"lucky"}
    for bad in ["clean", "nobody=1", "clean=x", "clean=-1", "clean=0", "clean=nan"]:
        with pytest.raises(RfprmError, match="mix"):
            parse_mix(bad)


# ----------------------------------------------------------------------------- teachers

def test_clean_traces_are_right_everywhere(pool):
    for r in by_teacher(pool, "clean"):
        assert step_scores(r) == [USEFUL] * len(split_steps(r["trajectory"]))
        assert is_correct(r["response"], r["answer"]) and r["first_error"] == -1
        assert len(split_steps(r["response"])) == len(split_steps(r["trajectory"]))
        assert r["response"].endswith(f"\\boxed{{{r['answer']}}}")


def test_sloppy_traces_slip_at_first_error(pool):
    for r in by_teacher(pool, "sloppy"):
        scores, k = step_scores(r), r["first_error"]
        assert k >= 0 and scores[:k] == [USEFUL] * k and scores[k] == WRONG
        assert not is_correct(r["response"], r["answer"])


def test_lucky_traces_err_but_land_on_the_answer(pool):
    for r in by_teacher(pool, "lucky"):
        scores, k = step_scores(r), r["first_error"]
        assert k >= 0 and scores[:k] == [USEFUL] * k and scores[k] == WRONG
        assert is_correct(r["response"], r["answer"])


def test_wrong_plan_traces_are_locally_sound_but_wrong(pool):
    kinds = Counter()
    for r in by_teacher(pool, "wrong_plan"):
        problem = parse_problem(r["problem"])
        numbers = {n for o in problem.ops for n in (o.a, o.b)}
        written = set()
        eqs = [world.parse_equations(s)[0] for s in split_steps(r["trajectory"])]
        for eq in eqs:  # right arithmetic, operands from the problem or earlier results
            assert eq.result == eval(f"{eq.a} {eq.op} {eq.b}")
            assert {eq.a, eq.b} <= numbers | written
            written.add(eq.result)
        assert r["first_error"] == -1 and not is_correct(r["response"], r["answer"])
        assert r["response"].endswith(f"\\boxed{{{eqs[-1].result}}}")  # the response follows the plan
        kinds[sorted(o.op for o in problem.ops) == sorted(e.op for e in eqs)] += 1
    assert kinds[True] > 10 and kinds[False] > 10  # misread orders and misread operators both occur


def test_wrong_plan_readings():
    from rfprm.world.teachers import _read_flat
    p = parse_problem("Compute 7 + 5 * 3.")
    assert _read_flat(p.tree, True) == parse_problem("Compute (7 + 5) * 3.").tree
    p = parse_problem("Compute 20 - (7 + 5).")
    assert _read_flat(p.tree, False) == parse_problem("Compute 20 - 7 + 5.").tree
    assert _read_flat(p.tree, True) == p.tree
    p = parse_problem("Compute 20 - 7 + 5.")
    assert _read_flat(p.tree, True, right_to_left=True) == parse_problem("Compute 20 - (7 + 5).").tree


def test_wandering_traces_detour_but_answer_right(pool):
    for r in by_teacher(pool, "wandering"):
        scores, k = step_scores(r), r["first_error"]
        assert k >= 1 and scores[:k] == [USEFUL] * k and scores[k] < USEFUL
        assert WRONG not in scores
        assert is_correct(r["response"], r["answer"])
        n_ops = len(parse_problem(r["problem"]).ops)
        assert len(split_steps(r["response"])) == n_ops < len(split_steps(r["trajectory"]))
        assert scores.count(USEFUL) == n_ops


def test_misaligned_traces_think_right_and_answer_wrong(pool):
    for r in by_teacher(pool, "misaligned"):
        assert step_scores(r) == [USEFUL] * len(split_steps(r["trajectory"]))
        assert r["first_error"] == -1
        assert not is_correct(r["response"], r["answer"])
        assert extract_boxed(r["response"]) is not None
        assert len(split_steps(r["response"])) == len(split_steps(r["trajectory"]))


# ----------------------------------------------------------------------------- judge

def test_extract_boxed_and_answers():
    assert extract_boxed("so \\boxed{32}") == "32"
    assert extract_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{{a}{b}}") == "{a}{b}"
    assert extract_boxed("\\boxed{7} and \\boxed{8") == "7"  # unclosed last: the one before
    assert extract_boxed("no answer here") is None and extract_boxed("\\boxed{") is None
    for raw in ["32", " 32 ", "032", "+32", "32.0", "$32$", "\\boxed{32}", "32."]:
        assert normalize_answer(raw) == "32", raw
    assert normalize_answer("1,032") == "1032" and normalize_answer(-0) == "0"
    assert is_correct("gives 32, so the answer is \\boxed{32}", "32")
    assert is_correct("\\boxed{ 32 }", 32)
    assert not is_correct("\\boxed{33}", "32") and not is_correct("32", "32")


def test_judge_step_scores():
    problem = "Compute (7 + 5) * 3 - 4."
    first, second = "First, 7 + 5 = 12.", "Then 12 * 3 = 36."
    assert judge_step(problem, [], first) == USEFUL
    assert judge_step(problem, [], "so we add: 5 + 7 = 12, good") == USEFUL  # words, swapped order
    assert judge_step(problem, [], "7 + 5 gives 12.") == USEFUL  # the response's phrasing
    assert judge_step(problem, [], "First, 7 + 5 = 13.") == WRONG
    assert judge_step(problem, [], "Let me think about it.") == UNPARSEABLE
    assert judge_step(problem, [first], first) == IRRELEVANT            # repeat
    assert judge_step(problem, [first], "Then 12 + 0 = 12.") == IRRELEVANT  # no-op
    assert judge_step(problem, [first], "Then 8 * 6 = 48.") == IRRELEVANT   # unrelated numbers
    assert judge_step(problem, [first], "Then 3 * 12 = 36.") == USEFUL
    assert judge_step(problem, [first], "Then 12 - 3 = 9.") == IRRELEVANT   # not the problem's op
    assert judge_step(problem, [], second) == IRRELEVANT  # 12 was never computed
    assert judge_step(problem, [first, second], "Then 36 - 4 = 32, \\boxed{32}") == USEFUL
    # local judging: after a slip, a step that carries it forward is right given what came before
    slip = "First, 7 + 5 = 13."
    assert judge_step(problem, [slip], "Then 13 * 3 = 39.") == USEFUL
    assert judge_step(problem, [slip], second) == IRRELEVANT           # jumps back to the true 12
    assert judge_step(problem, [slip, second], "Then 36 - 4 = 32.") == USEFUL
    assert judge_step(problem, [], "7 + 5 = 12 and 12 * 3 = 37") == WRONG  # lowest of the two
    assert judge_steps(problem, [first, second, "Then 36 - 4 = 32."]) == [USEFUL] * 3


def test_noisy_judge_errs_at_its_documented_rates(pool):
    judge = world.NoisyJudge()
    n = Counter()
    for r in pool:
        steps = split_steps(r["trajectory"])
        got = judge.steps(r["problem"], steps)
        assert got == judge.steps(r["problem"], steps)                      # deterministic
        assert got == [judge(r["problem"], steps[:t], s) for t, s in enumerate(steps)]
        for local, g in zip(world.local_verdicts(r["problem"], steps), got):
            n[("flawed" if local < USEFUL else "sound"), g == USEFUL] += 1
        if r["teacher"] == "wrong_plan":                                  # blind to a misread plan
            n["plan", world.local_verdicts(r["problem"], steps) == [USEFUL] * len(steps)] += 1
    miss = n["flawed", True] / (n["flawed", True] + n["flawed", False])
    alarm = n["sound", False] / (n["sound", True] + n["sound", False])
    assert 0.15 < miss < 0.25 and 0.03 < alarm < 0.07, (miss, alarm)
    assert n["plan", True] > 0.9 * 120
    assert world.NoisyJudge(seed=1).steps("Compute 7 + 5.", ["7 + 5 = 13"]) in ([0.0], [1.0])
    with pytest.raises(RfprmError, match="miss_rate"):
        world.NoisyJudge(miss_rate=2)


# ----------------------------------------------------------------------------- templates

def test_extract_template_follows_the_useful_steps(pool):
    assert problem_template(parse_problem("Compute (7 + 5) * 3 - 4.")) == "7 + 5 then _ * 3 then _ - 4"
    assert problem_template("Compute (14 - 4) * (3 + 14) - 2.") == "14 - 4 then 3 + 14 then _ * _ then _ - 2"
    assert problem_template("Compute 20 - (7 + 5).") == "7 + 5 then 20 - _"
    for r in pool:
        template = extract_template(r["problem"], r["trajectory"], r["response"])
        if r["teacher"] not in ("misaligned", "wrong_plan"):  # the others perform the right operations
            assert template == problem_template(r["problem"]), r
        if r["teacher"] == "wrong_plan":  # the misread plan, not the problem's
            assert template != problem_template(r["problem"]), r
        assert template_ops(template) == [step.split()[1] for step in template.split(" then ")]
    assert extract_template("Compute 7 + 5.", "I wonder.", "no idea") == ""
    assert extract_template("Compute 7 + 5.", "I wonder.", "7 + 5 gives 12.") == "7 + 5"
    # no useful step anywhere: every equation written, with its numbers
    assert extract_template("Compute 7 + 5.", "Then 8 * 6 = 48.", "") == "8 * 6"
    # a slip does not change the plan; a reordered + keeps the problem's operation
    assert extract_template("Compute (7 + 5) * 3.", "First, 5 + 7 = 13.\n\nThen 13 * 3 = 39.", "") \
        == "7 + 5 then _ * 3"


def test_prompts_and_wrong_templates():
    problem = make_problems(1, seed=0)[0]
    assert problem_prompt(problem.text) == problem.text
    prompt = template_prompt(problem.text, "7 + 5 then _ * 3")
    assert prompt == f"{problem.text}\nPlan: 7 + 5 then _ * 3"
    assert template_prompt(problem.text, "") == problem.text
    rng = random.Random(0)
    for p in make_problems(200, seed=2):
        wrong = wrong_template(p, rng)
        assert wrong != problem_template(p) and template_ops(wrong)
    for bad in ("+ then * then -", "7 / 5", "7 + 5 then x * 3", "7 + 5 then"):
        with pytest.raises(RfprmError, match="template"):
            template_ops(bad)


def test_world_corpus():
    texts = world_corpus(50, seed=0)
    assert len(texts) == 50 and texts == world_corpus(50, seed=0)
    assert any(t.startswith("<think>\n") for t in texts)
    assert any("\nPlan: " in t for t in texts)
    assert any(t.startswith("Compute ") and "\n" not in t for t in texts)


# ----------------------------------------------------------------------------- CLI

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rfprm.world", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_problems_and_traces(tmp_path):
    out = tmp_path / "sub" / "problems.jsonl"
    res = run_cli("problems", "--n", "20", "--seed", "4", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "20 problems" in res.stdout and len(res.stdout.strip().splitlines()) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [p.to_record() for p in make_problems(20, seed=4)]

    out = tmp_path / "traces.jsonl"
    res = run_cli("traces", "--n", "30", "--seed", "4", "--out", str(out), "--mix", "clean=1,lucky=2")
    assert res.returncode == 0, res.stderr
    assert "clean 10" in res.stdout and "lucky 20" in res.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == make_traces(30, seed=4, mix={"clean": 1, "lucky": 2})


@pytest.mark.parametrize("args", [["problems", "--n", "0"], ["traces", "--mix", "clean=oops"],
                                  ["traces", "--n", "5", "--out", "{blocker}/x.jsonl"]])
def test_cli_bad_input_fails_cleanly(tmp_path, args):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where a directory is needed: unwritable even for root
    out = tmp_path / "out.jsonl"
    args = [a.format(blocker=blocker) for a in args]
    res = run_cli(*args, *([] if "--out" in args else ["--out", str(out)]))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no file, no temp file


@pytest.mark.parametrize("args", [["problems", "--seed", "-1"], ["problems", "--n", "x"],
                                  ["traces", "--mix", "nobody=1"], ["teachers"], []])
def test_cli_bad_flags_in_process(tmp_path, capsys, args):
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_:
        cli_main(lambda: world_main([*args, "--out", str(out)] if args else []))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_:  # a directory as --out
        cli_main(lambda: world_main(["problems", "--out", str(tmp_path)]))
    assert exit_.value.code == 2
