"""`python -m rfprm.evaluate processbench`: the official fields, a hand-computed F1, bad files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rfprm.errors import RfprmError
from rfprm.evaluate import main, processbench_record, processbench_report, read_processbench
from rfprm.steps import split_steps

ROOT = Path(__file__).resolve().parents[1]


def row(i, steps, label):
    return {"id": f"t-{i}", "generator": "hand", "problem": f"Problem {i}?", "steps": steps,
            "label": label, "final_answer_correct": label == -1}


# A stub PRM scores a step 0.1 when it says WRONG, else 0.9; threshold 0.5. By hand:
# gsm8k: flawed rows predict 1 (ok), 0 (ok), 1 for truth 2 (miss) -> error_acc 2/3;
#        correct rows predict -1 (ok), 1 (miss)                  -> correct_acc 1/2;
#        F1 = 2 * (200/3) * 50 / (200/3 + 50) = 400/7 = 57.142857...
# math:  both right -> 100, 100, F1 100.   Average F1 = (400/7 + 100) / 2 = 78.571428...
GSM8K = [row(0, ["a", "b WRONG", "c"], 1), row(1, ["x WRONG", "y"], 0),
         row(2, ["p", "q WRONG", "r WRONG"], 2), row(3, ["ok", "first line\n\nsame step"], -1),
         row(4, ["ok", "WRONG"], -1)]
MATH = [row(5, ["WRONG"], 0), row(6, ["a", "b"], -1)]


def stub_scores(records):
    return [[0.1 if "WRONG" in s else 0.9 for s in split_steps(r["trajectory"])] for r in records]


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, rows in (("gsm8k", GSM8K), ("math", MATH)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(p)
    return paths


def test_hand_computed_f1(files):
    report = processbench_report({p.stem: read_processbench(p) for p in files}, stub_scores, 0.5)
    g, m = report["files"]["gsm8k"], report["files"]["math"]
    assert g["error_acc"] == pytest.approx(200 / 3) and g["correct_acc"] == pytest.approx(50.0)
    assert g["f1"] == pytest.approx(400 / 7)
    assert m == {"error_acc": 100.0, "correct_acc": 100.0, "f1": 100.0}
    assert report["average_f1"] == pytest.approx((400 / 7 + 100) / 2)


def test_one_scored_step_per_listed_step():
    record = processbench_record(GSM8K[3])
    assert split_steps(record["trajectory"]) == ["ok", "first line\nsame step"]
    assert record["response"] == "first line\nsame step"


def test_cli_on_the_tiny_prm_matches_the_library(files, tmp_path, capsys):
    from rfprm.prm import load_prm
    out = tmp_path / "pb.json"
    assert main(["processbench", *map(str, files), "--prm", "tiny-prm", "--threshold", "0.5",
                 "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    prm = load_prm("tiny-prm")
    expected = processbench_report({p.stem: read_processbench(p) for p in files},
                                   lambda recs: [s.steps for s in prm.score_batch(recs)], 0.5)
    assert set(written["files"]) == {"gsm8k", "math"}
    for name in written["files"]:
        assert written["files"][name] == pytest.approx(expected["files"][name])
    assert written["average_f1"] == pytest.approx(expected["average_f1"])
    assert "average F1" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("label"), "missing field 'label'"),
    (lambda r: r.update(label=3), "label 3 is out of range"),
    (lambda r: r.update(label=True), "label True is out of range"),
    (lambda r: r.update(steps=[]), "steps must be a non-empty list"),
])
def test_bad_rows_name_file_and_line(tmp_path, change, message):
    bad = [dict(r) for r in MATH]
    change(bad[1])
    p = tmp_path / "math.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(RfprmError, match=f"math.jsonl:2: {message}"):
        read_processbench(p)


def test_bad_file_exits_2_and_writes_nothing(files, tmp_path):
    rows = [dict(r) for r in MATH]
    del rows[0]["steps"]
    bad = tmp_path / "omnimath.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "rfprm.evaluate", "processbench", str(files[0]), str(bad),
                           "--prm", "tiny-prm", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:1: missing field 'steps' (ProcessBench rows "
                                                f"have id, generator, problem, steps, label, final_answer_correct)"]
