"""JSONL records: reading, field mapping, TRL's stepwise format, validation errors, atomic writes."""
import json
import os

import pytest

from rfprm import world
from rfprm.data import Records, normalize_record, parse_fields, read_records, write_records
from rfprm.errors import RfprmError

TRACE = {"problem": "Compute 7 + 5.", "trajectory": "First, 7 + 5 = 12.\n\nCheck: 12.",
         "response": "7 + 5 gives 12, so the answer is \\boxed{12}", "answer": "12"}
LABELLED = {**TRACE, "step_rewards": [1.0, 0.5], "trajectory_reward": 1.0}


def write_lines(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines),
                    encoding="utf-8")
    return path


def read_one(tmp_path, record, kind="trace", fields=None):
    return read_records(write_lines(tmp_path, [record]), kind, fields)[0]


# ----------------------------------------------------------------------------- reading

def test_reads_the_three_kinds_and_round_trips(tmp_path):
    problems = [p.to_record() for p in world.make_problems(5, seed=0)]
    traces = world.make_traces(5, seed=0)
    for kind, records in [("problem", problems), ("trace", traces), ("labelled", [LABELLED] * 3)]:
        path = tmp_path / f"{kind}.jsonl"
        assert write_records(path, records) == len(records)
        got = read_records(path, kind)
        assert isinstance(got, Records) and got == records and got.n_skipped == 0
    # world traces keep their evaluation-only fields
    assert read_records(tmp_path / "trace.jsonl", "trace")[0]["teacher"] == traces[0]["teacher"]


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path):
    path = write_lines(tmp_path, ["", TRACE, "   ", TRACE, '{"problem": 3}'])
    with pytest.raises(RfprmError, match=r"data\.jsonl:5: field 'problem': expected a string, got int"):
        read_records(path, "trace")


def test_answer_numbers_become_strings(tmp_path):
    assert read_one(tmp_path, {"problem": "p", "answer": 12}, "problem")["answer"] == "12"
    assert read_one(tmp_path, {"problem": "p", "answer": 2.5}, "problem")["answer"] == "2.5"
    assert "answer" not in read_one(tmp_path, {k: v for k, v in TRACE.items() if k != "answer"})


def test_field_mapping(tmp_path):
    s1k = {"question": "Compute 7 + 5.", "deepseek_thinking_trajectory": "a\n\nb",
           "deepseek_attempt": "\\boxed{12}", "solution": "12", "cot_type": "math"}
    spec = "problem=question, trajectory=deepseek_thinking_trajectory,response=deepseek_attempt,answer=solution"
    rec = read_one(tmp_path, s1k, "trace", spec)
    assert rec == {"problem": "Compute 7 + 5.", "trajectory": "a\n\nb", "response": "\\boxed{12}",
                   "answer": "12", "cot_type": "math"}
    assert list(rec)[:4] == ["problem", "trajectory", "response", "answer"]
    # s1K's first release keeps the thinking as a list of strings: a list of steps
    rec = read_one(tmp_path, {"question": "q", "thinking_trajectories": ["a", "b"], "attempt": "c"},
                   "trace", {"problem": "question", "trajectory": "thinking_trajectories",
                             "response": "attempt"})
    assert rec["trajectory"] == "a\n\nb" and rec["response"] == "c"


def test_parse_fields():
    assert parse_fields("problem=question,trajectory=t") == {"problem": "question", "trajectory": "t"}
    assert parse_fields(" problem = q , ") == {"problem": "q"}
    assert parse_fields("") == {} and parse_fields(None) == {}
    for spec, message in [("problem", "'problem' is not ours=theirs"),
                          ("problem=", "'problem=' is not ours=theirs"),
                          ("=question", "is not ours=theirs"),
                          ("probelm=question", "unknown field 'probelm', expected one of problem, answer"),
                          ("problem=a,problem=b", "'problem' is mapped twice")]:
        with pytest.raises(RfprmError, match=f"--fields: .*{message}"):
            parse_fields(spec)
    with pytest.raises(RfprmError, match="'problem' must map to a field name"):
        parse_fields({"problem": 3})


def test_mapped_field_missing_names_both(tmp_path):
    path = write_lines(tmp_path, [{"problem": "p", "answer": "1"}])
    with pytest.raises(RfprmError, match=r":1: missing field 'question' \(mapped to 'problem' by --fields\)"):
        read_records(path, "problem", "problem=question")


def test_think_text_is_split_for_the_user(tmp_path):
    text = "<think>\na\n\nb\n</think>\n\nso \\boxed{1}"
    for key in ("trajectory", "text", "completion"):
        rec = read_one(tmp_path, {"problem": "p", key: text})
        assert rec == {"problem": "p", "trajectory": "a\n\nb", "response": "so \\boxed{1}"}
    # the R1 chat template puts <think> in the prompt: only </think> in the text
    assert read_one(tmp_path, {"prompt": "p", "completion": "a\n</think>\nb"})["response"] == "b"
    # tags around a trajectory whose response is given separately are dropped
    rec = read_one(tmp_path, {"problem": "p", "trajectory": "<think>a</think>", "response": "r"})
    assert rec["trajectory"] == "a" and rec["response"] == "r"


def test_trl_stepwise(tmp_path):
    trl = {"prompt": "Compute 7 + 5 * 2.", "completions": ["5 * 2 = 10.", "7 + 10 = 18.\n\nSo 18.",
                                                           "The answer is 18."],
           "labels": [True, False, False]}
    rec = read_one(tmp_path, trl, "labelled")
    assert rec["problem"] == "Compute 7 + 5 * 2."
    # a blank line inside a completion is folded so that each completion stays one step
    assert rec["trajectory"] == "5 * 2 = 10.\n\n7 + 10 = 18.\nSo 18.\n\nThe answer is 18."
    assert rec["response"] == "The answer is 18."  # the last completion step
    assert rec["step_rewards"] == [1.0, 0.0, 0.0] and rec["trajectory_reward"] == 0.0
    assert not {"prompt", "completions", "labels"} & set(rec)
    all_right = read_one(tmp_path, {**trl, "labels": [True, True, True]}, "labelled")
    assert all_right["trajectory_reward"] == 1.0
    given = read_one(tmp_path, {**trl, "trajectory_reward": 0.25}, "labelled")
    assert given["trajectory_reward"] == 0.25
    unlabelled = read_one(tmp_path, {"prompt": "p", "completions": ["a", "b"]}, "trace")
    assert unlabelled == {"problem": "p", "trajectory": "a\n\nb", "response": "b"}
    mapped = read_one(tmp_path, {"q": "p", "steps": ["a"], "ok": [1]}, "labelled",
                      "problem=q,completions=steps,labels=ok")
    assert mapped["step_rewards"] == [1.0]


# ----------------------------------------------------------------------------- validation

def drop(record, key):
    return {k: v for k, v in record.items() if k != key}


BAD = [  # (kind, line, message after "FILE:1: ")
    ("trace", "{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ("trace", "[1, 2]", "expected a JSON object, got list"),
    ("trace", drop(TRACE, "problem"), "missing field 'problem'"),
    ("problem", {"problem": "p"}, "missing field 'answer'"),
    ("trace", drop(TRACE, "trajectory"), "missing field 'trajectory'"),
    ("labelled", drop(LABELLED, "step_rewards"), "missing field 'step_rewards'"),
    ("trace", {**TRACE, "problem": ["p"]}, "field 'problem': expected a string, got list"),
    ("trace", {**TRACE, "problem": "  "}, "field 'problem' is empty"),
    ("problem", {"problem": "p", "answer": None}, "field 'answer': expected a string or a number, got null"),
    ("problem", {"problem": "p", "answer": True}, "field 'answer': expected a string or a number, got bool"),
    ("trace", {**TRACE, "trajectory": 5}, "field 'trajectory': expected a string, got int"),
    ("trace", {**TRACE, "response": {"a": 1}}, "field 'response': expected a string, got dict"),
    ("trace", {**TRACE, "trajectory": "\n\n  \n"}, "field 'trajectory' has no steps (only blank text)"),
    ("trace", drop(TRACE, "response"),
     "trajectory without a response: missing field 'response' (and no </think> in 'trajectory' to split on)"),
    ("trace", {**TRACE, "response": " \n"}, "trajectory without a response: field 'response' is empty"),
    ("trace", {"problem": "p", "trajectory": "<think>a</think>"},
     "trajectory without a response: field 'response' is empty"),
    ("trace", {"problem": "p", "text": "<think>a"}, "field 'text': expected one <think>...</think> block, "
                                                    "found '<think>' without '</think>'"),
    ("trace", {"problem": "p", "text": "plain"}, "field 'text' has no <think>...</think> block to split"),
    ("trace", {**TRACE, "trajectory": "<think>a</think>b"},
     "field 'trajectory' has a response after </think> and field 'response' is also given"),
    ("labelled", {**LABELLED, "step_rewards": "1,0"}, "field 'step_rewards': expected a list of numbers in "
                                                      "[0, 1], got str"),
    ("labelled", {**LABELLED, "step_rewards": [1.0, 1.5]}, "field 'step_rewards': item 1: expected a number "
                                                           "in [0, 1], got 1.5"),
    ("labelled", {**LABELLED, "step_rewards": [1.0, "x"]}, "field 'step_rewards': item 1: expected a number "
                                                           "in [0, 1], got str"),
    ("labelled", {**LABELLED, "step_rewards": [1.0]}, "field 'step_rewards' has 1 values but 'trajectory' has "
                                                      "2 steps"),
    ("trace", {**TRACE, "step_rewards": [0.1, 0.2, 0.3]}, "field 'step_rewards' has 3 values"),
    ("labelled", {**LABELLED, "trajectory_reward": -0.1}, "field 'trajectory_reward': expected a number in "
                                                          "[0, 1], got -0.1"),
    ("labelled", {**LABELLED, "trajectory_reward": "1"}, "field 'trajectory_reward': expected a number in "
                                                         "[0, 1], got str"),
    ("labelled", "{" + json.dumps(LABELLED)[1:-1] + ', "trajectory_reward": NaN}',
     "field 'trajectory_reward': expected a number in [0, 1], got nan"),
    ("labelled", {"prompt": "p", "completions": [], "labels": []},
     "field 'completions': expected a non-empty list of strings, got an empty list"),
    ("labelled", {"prompt": "p", "completions": ["a", " "], "labels": [1, 1]},
     "field 'completions': item 1 is empty, expected a non-empty string"),
    ("labelled", {"prompt": "p", "completions": ["a", "b"], "labels": [True]},
     "field 'labels' has 1 values but 'completions' has 2 steps"),
    ("labelled", {"prompt": "p", "completions": ["a"], "labels": [2]},
     "field 'labels': item 0: expected a number in [0, 1], got 2"),
]


@pytest.mark.parametrize("kind, line, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_every_bad_line_names_file_line_and_field(tmp_path, kind, line, message):
    good = {"problem": {"problem": "q", "answer": "1"}, "trace": TRACE, "labelled": LABELLED}[kind]
    path = write_lines(tmp_path, [good, good, line])
    with pytest.raises(RfprmError) as e:
        read_records(path, kind)
    text = str(e.value)
    assert text.startswith(f"{path}:3: ") and message in text, text
    assert "\n" not in text


def test_labelled_kind_needs_labels_but_trace_does_not(tmp_path):
    path = write_lines(tmp_path, [TRACE])
    assert read_records(path, "trace") == [TRACE]
    with pytest.raises(RfprmError, match=":1: missing field 'step_rewards'"):
        read_records(path, "labelled")


def test_skip_bad_counts_the_skipped_lines(tmp_path):
    path = write_lines(tmp_path, [TRACE, "{oops", drop(TRACE, "response"), "", TRACE, "7"])
    got = read_records(path, "trace", skip_bad=True)
    assert got == [TRACE, TRACE] and got.n_skipped == 3
    assert [m.split(": ")[0] for m in got.skipped] == [f"{path}:2", f"{path}:3", f"{path}:6"]


def test_no_records_is_an_error(tmp_path):
    for lines in ([], ["", "  "]):
        with pytest.raises(RfprmError, match=r"empty\.jsonl: no records$"):
            read_records(write_lines(tmp_path, lines, "empty.jsonl"), "trace")
    path = write_lines(tmp_path, ["{bad", "[]"], "allbad.jsonl")
    with pytest.raises(RfprmError, match=r"allbad\.jsonl: no records \(2 bad lines skipped; first: .*:1: not valid"):
        read_records(path, "trace", skip_bad=True)


def test_file_level_errors(tmp_path):
    with pytest.raises(RfprmError, match="missing.jsonl: no such file"):
        read_records(tmp_path / "missing.jsonl", "trace")
    with pytest.raises(RfprmError, match="is a directory"):
        read_records(tmp_path, "trace")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"problem": "caf\xe9"}\n')
    with pytest.raises(RfprmError, match="latin1.jsonl: not UTF-8 text"):
        read_records(tmp_path / "latin1.jsonl", "problem")
    with pytest.raises(RfprmError, match="unknown record kind 'traces', expected one of problem, trace, labelled"):
        read_records(write_lines(tmp_path, [TRACE]), "traces")


def test_normalize_record_in_memory():
    assert normalize_record({"prompt": "p", "answer": 3}, "problem") == {"problem": "p", "answer": "3"}
    with pytest.raises(RfprmError, match=r"^records\[4\]: field 'step_rewards' has 1 values"):
        normalize_record({**LABELLED, "step_rewards": [1]}, "labelled", where="records[4]")


# ----------------------------------------------------------------------------- writing

def test_write_records_is_atomic(tmp_path):
    path = tmp_path / "out" / "labels.jsonl"
    write_records(path, [LABELLED])
    before = path.read_text()
    for bad in ([LABELLED, {"x": object()}], [{"x": float("nan")}], [LABELLED, 7]):
        with pytest.raises(RfprmError, match=r"labels\.jsonl: record \d+ cannot be written as JSON"):
            write_records(path, bad)
        assert path.read_text() == before  # the old file is untouched
        assert os.listdir(path.parent) == ["labels.jsonl"]  # no temporary file left behind
    fresh = tmp_path / "fresh.jsonl"
    with pytest.raises(RfprmError):
        write_records(fresh, [{"x": object()}])
    assert not fresh.exists() and os.listdir(tmp_path) == ["out"]


def test_write_records_keeps_unicode_readable(tmp_path):
    path = tmp_path / "u.jsonl"
    write_records(path, [{"problem": "√2 ≈ 1.41", "answer": "1.41"}])
    assert "√2" in path.read_text(encoding="utf-8")
    assert read_records(path, "problem")[0]["problem"] == "√2 ≈ 1.41"


def test_labelled_record_may_lack_the_trajectory_reward(tmp_path):
    # rollouts may be run for part of a pool only; such records train the step head alone
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps(drop(LABELLED, "trajectory_reward")) + "\n")
    (rec,) = read_records(path, "labelled")
    assert "trajectory_reward" not in rec and rec["step_rewards"] == LABELLED["step_rewards"]
