"""Every script in experiments/ runs end to end with --quick (found by glob: a new one is tested too).

Each runs as `python -m experiments.NAME --quick` from the repository root, the way its
docstring says to run it, and must exit 0 and print something. No script may import a
top-level script (train_prm.py, select_data.py, bon.py, rl.py): shared code lives in rfprm/.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))
TOP_LEVEL_SCRIPTS = {p.stem for p in REPO.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_experiments_are_found():
    assert EXPERIMENTS, "experiments/ should hold at least one script (or drop this test)"


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_imports_no_top_level_script(script):
    bad = imported_modules(script) & TOP_LEVEL_SCRIPTS
    assert not bad, f"{script.name} imports top-level script(s) {sorted(bad)}: move the code into rfprm/"
    assert "sys.path" not in script.read_text(), f"{script.name} patches sys.path: run it with python -m"


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_runs_quick(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"experiments.{script.stem}", "--quick"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script.name} --quick failed:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script.name} --quick printed nothing"


def test_policy_step_auc_reads_steps_up_to_the_first_flaw():
    """prm_quality's policy-sample measure: sound steps before a first flaw (every step of a
    flawless sample) against the first flaws; a step after the first flaw counts on neither side."""
    from types import SimpleNamespace

    from experiments.prm_quality import policy_step_auc

    class Scores:
        def score_batch(self, records, batch_size=32):
            return [SimpleNamespace(steps=r["scores"]) for r in records]

    records = [{"first_error": -1, "scores": [0.9, 0.8]},
               {"first_error": 1, "flaw": "wrong", "scores": [0.7, 0.1, 0.05]},   # 0.05 follows the flaw: out
               {"first_error": 0, "flaw": "other", "scores": [0.75, 0.99]}]
    res = policy_step_auc(Scores(), records)
    assert {k: v[1:] for k, v in res.items()} == {"all": (3, 2), "wrong": (3, 1), "other": (3, 1)}
    assert res["all"][0] == pytest.approx(100.0 * 5 / 6)   # sound 0.9, 0.8, 0.7 against 0.1, 0.75: 5 of 6 pairs
    assert res["wrong"][0] == 100.0 and res["other"][0] == pytest.approx(100.0 * 2 / 3)


def test_judged_samples_find_the_first_flaw_with_the_exact_judge():
    from experiments.prm_quality import judged_samples

    problem = "Compute 6 * 4 + 3."
    right = "<think>First, 6 * 4 = 24.\n\nThen 24 + 3 = 27.</think>6 * 4 gives 24.\n\n24 + 3 gives 27: \\boxed{27}"
    slip = "<think>First, 6 * 4 = 24.\n\nThen 24 + 3 = 28.</think>6 * 4 gives 24.\n\n24 + 3 gives 28: \\boxed{28}"
    misread = "<think>First, 4 + 3 = 7.\n\nThen 6 * 7 = 42.</think>4 + 3 gives 7.\n\n6 * 7 gives 42: \\boxed{42}"
    out = judged_samples([problem] * 4, [right, slip, misread, "no trace at all"])
    assert [r["first_error"] for r in out] == [-1, 1, 0]     # the unparsed completion is dropped
    assert [r["flaw"] for r in out] == [None, "wrong", "other"]
    assert out[1]["trajectory"].startswith("First, 6 * 4 = 24.")


def test_student_spread_ranks_with_a_prm_and_drops_teachers_only_as_asked(capsys):
    """--prm ranks the default pool as select_data.py does; the ORACLE --drop-teachers leaves the
    named teachers out of every pick, and an unknown name is one clear error."""
    from experiments.student_spread import main
    from rfprm.errors import RfprmError

    main(["--quick", "--prm", "tiny-prm", "--drop-teachers", "misaligned,wrong_plan", "--seeds", "0"])
    counts = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("the picks by teacher"))
    assert "clean" in counts and "misaligned" not in counts and "wrong_plan" not in counts
    with pytest.raises(RfprmError, match="no teacher 'planless'"):
        main(["--quick", "--picks", "random", "--drop-teachers", "planless"])
    with pytest.raises(RfprmError, match="use it with --prm, --labels or --picks random"):
        main(["--quick", "--picks", "top.jsonl", "--drop-teachers", "misaligned"])


def test_student_spread_ranks_by_the_training_labels(capsys):
    """--labels ranks the pool by the labels a PRM trains on: the template-guided reward of a
    wrong-plan trace is low (its plan misleads the rollouts), so none reaches the top k."""
    from experiments.student_spread import main
    from rfprm.errors import RfprmError

    main(["--quick", "--labels", "tiny-policy", "--seeds", "0"])
    counts = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("the picks by teacher"))
    assert "clean" in counts and "wrong_plan" not in counts
    with pytest.raises(RfprmError, match="give one"):
        main(["--quick", "--labels", "tiny-policy", "--prm", "tiny-prm"])
    with pytest.raises(RfprmError, match="--rollouts must be >= 1"):
        main(["--quick", "--labels", "tiny-policy", "--rollouts", "0"])


def test_student_thinking_read_out_takes_the_last_written_result(monkeypatch):
    """`thinking` counts a problem when the thinking's last equation writes the answer, whatever
    the response restates; a malformed output or thinking without an equation counts as wrong.
    The answer share comes from the same outputs."""
    import experiments.student_spread as ss
    from rfprm.selection import StudentSpec

    outs = ["<think>\nFirst, 6 * 4 = 24.\n\nThen 24 + 3 = 27.\n</think>\n\n6 * 4 gives 24.\n\n24 + 3 gives 28, "
            "so the answer is \\boxed{28}",
            "<think>\nFirst, 6 * 4 = 24.\n</think>\n\nso the answer is \\boxed{27}",
            "no trace at all = 27.",
            "<think>\nI am not sure.\n</think>\n\n\\boxed{27}"]
    monkeypatch.setattr(ss, "chat_complete", lambda *a, **k: outs)
    problems = [("Compute 6 * 4 + 3.", "27")] * 4
    assert ss.answer_and_thinking(None, None, problems, StudentSpec()) == (0.5, 0.25)


def test_joint_ablation_seed_0_is_the_builds_joint_stage(capsys):
    """experiments.joint_ablation reruns tiny-prm's joint stage with and without the trajectory
    term; at the build's seed its reasonflux PRM must be the build's own, byte for byte."""
    from experiments.joint_ablation import main
    main(["--quick"])
    out = capsys.readouterr().out
    assert "against the build's tiny-prm: the same bytes" in out
    assert "seed  variant" in out and "step-only" in out and "paired over 1 seeds" in out
