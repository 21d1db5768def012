"""The library's shape: the world is a leaf nothing in rfprm/ imports, the modules import each
other one way (no cycle), no module imports a script, and every script reads as flags -> build ->
run -> report (short, with a short --help)."""
import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

LIBRARY = ROOT / "rfprm"
SCRIPTS = ("train_prm.py", "select_data.py", "bon.py")
ENTRY_POINTS = {"rfprm.recipes"}   # `python -m rfprm.recipes`: an entry point into the world, imported by nothing


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path) -> set[str]:
    """rfprm modules a file imports at any depth of its code (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rfprm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "rfprm":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}   # `from . import world` imports a module
    return found


def library_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in LIBRARY.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name} for name, path in files.items()}


def test_the_library_never_imports_the_world_statically():
    for name, deps in library_graph().items():
        if name.startswith("rfprm.world") or name in ENTRY_POINTS:
            continue
        world = sorted(d for d in deps if d == "rfprm.world" or d.startswith("rfprm.world."))
        assert not world, f"{name} imports {world}: the world must stay a leaf"


def test_the_uses_import_nothing_from_the_world_at_run_time():
    """In a fresh interpreter, importing the uses loads no module of the world package."""
    code = ("import json, sys; import rfprm.selection, rfprm.bon, rfprm.labels, rfprm.prm, rfprm.prm_recipe, "
            "rfprm.cli, rfprm.task; print(json.dumps(sorted(m for m in sys.modules if m.startswith('rfprm'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert "rfprm.selection" in loaded and "rfprm.prm" in loaded           # it did import them
    assert not [m for m in loaded if m == "rfprm.world" or m.startswith("rfprm.world.")]


def test_no_import_cycle_among_rfprm_modules():
    graph = library_graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_module_imports_a_script():
    scripts = {s.removesuffix(".py") for s in SCRIPTS} | {"rl"}
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not set(names) & scripts, f"{path.relative_to(ROOT)} imports a script: {names}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_thin_with_a_short_help(script):
    assert len((ROOT / script).read_text().splitlines()) <= 220
    res = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and len(res.stdout.splitlines()) <= 40, res.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_common_flags_mean_the_same_everywhere(script, tmp_path):
    """A bad common flag gets the same one-line error from every script, before any work."""
    for flags, message in ((["--seed", "-1"], "--seed must be >= 0, got -1"),
                           (["--threads", "-2"], "--threads must be >= 0"),
                           (["--set", "nonsense=1"], "--set nonsense=1: expected FIELD=VALUE")):
        res = subprocess.run([sys.executable, script, *flags, "--out", str(tmp_path / "o")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
            (flags, res.stderr)
    res = subprocess.run([sys.executable, script, "--show-preset", "--set", "seed_is_not_a_field=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "expected FIELD=VALUE" in res.stderr


def test_show_preset_prints_the_fields_and_set_changes_them():
    res = subprocess.run([sys.executable, "train_prm.py", "--show-preset", "--set", "steps=123,compile=false"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines()[1:])
    assert lines["steps"] == "123" and lines["compile"] == "False" and lines["prm_layers"] == "4"   # preset world
    res = subprocess.run([sys.executable, "train_prm.py", "--show-preset", "--data", "x.jsonl"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "preset data" in res.stdout and dict(line.split(None, 1) for line in res.stdout.splitlines()[1:])[
        "prm_layers"] == "0"   # --data: every layer, whatever --model is called
