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
