"""The recipes that build the shipped checkpoints, in miniature: the loss falls, the result
loads through the public API and answers in the chat format; bad flags fail cleanly."""
import subprocess
import sys

import rfprm
from rfprm import world
from rfprm.generate import chat_complete, default_stop_ids
from rfprm.recipes import build_tiny_base, build_tiny_policy, eval_problems, held_out_texts


def test_miniature_base_and_policy(tmp_path):
    base_dir, base_hist = build_tiny_base(out=tmp_path / "base", quick=True)
    assert base_hist[-1]["loss"] < base_hist[0]["loss"]
    policy_dir, pol_hist = build_tiny_policy(base=base_dir, out=tmp_path / "policy", quick=True)
    assert pol_hist[-1]["loss"] < pol_hist[0]["loss"]
    model, tok = rfprm.load_model(policy_dir), rfprm.load_tokenizer(policy_dir)
    assert model.vocab_limit == tok.vocab_size <= model.cfg.vocab_size
    assert set(tok.stop_ids) <= set(default_stop_ids(model))
    out = chat_complete(model, tok, ["Compute 3 + 4."], max_new_tokens=8)
    assert isinstance(out[0], str)
    assert (policy_dir / "README.md").read_text().count("python -m rfprm.recipes tiny-policy") == 1


def test_evaluation_problems_are_held_out():
    held = held_out_texts()
    assert {p.text for p in eval_problems(500)} <= held
    assert not held & {p.text for p in world.make_problems(3000, 0, exclude=held)}


def test_bad_flags_exit_cleanly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "rfprm.recipes", "tiny-base", "--steps", "0",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_check_examples_target_only_the_verdicts():
    from rfprm.recipes import CHECK_REQUEST, check_example
    from rfprm.selection import IGNORE
    tok = rfprm.load_tokenizer("tiny-policy")
    record = {"problem": "Compute (8 + 1) * 8 - 3.",
              "trajectory": "First, 8 + 1 = 9.\n\nThen 9 * 8 = 70.\n\nThen 70 + 0 = 70."}
    prompt, ids, labels = check_example(tok, record)
    assert tok.decode(prompt).endswith(f"{CHECK_REQUEST}<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(ids) == ("First, 8 + 1 = 9. right\n\nThen 9 * 8 = 70. wrong\n\n"
                               "Then 70 + 0 = 70. useless<|im_end|>")
    assert len(labels) == len(ids)
    targets = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert targets == " right wrong useless<|im_end|>"           # never a step's own tokens
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels))


def test_bad_shares_exit_cleanly(tmp_path):
    for flag in ("--check-share", "--template-share"):
        res = subprocess.run([sys.executable, "-m", "rfprm.recipes", "tiny-policy", flag, "1",
                              "--out", str(tmp_path / "x")], capture_output=True, text=True)
        assert res.returncode == 2 and flag in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "x").exists()


def test_all_quick_end_to_end_is_byte_identical_and_resumes(tmp_path, capsys):
    """`python -m rfprm.recipes all --quick` builds the three checkpoints, each loadable through
    the public API; the same seed writes the same bytes; a rerun keeps what is built."""
    from rfprm.recipes import build_all
    seconds = build_all(tmp_path / "a", seed=0, quick=True)
    assert list(seconds) == ["tiny-base", "tiny-policy", "tiny-prm"]
    prm = rfprm.load_prm(tmp_path / "a" / "tiny-prm")
    assert prm.head == "step" and 0 <= prm.threshold <= 1
    readme = (tmp_path / "a" / "tiny-prm" / "README.md").read_text()
    assert "first-error F1" in readme and "distinct traces of the policy's own" in readme
    assert "joint stage" in readme and "before the joint stage" in readme
    from rfprm.world.recipes import ALPHAS
    assert prm.alpha in ALPHAS and f"α = {prm.alpha:g}, chosen by Best-of-4" in readme
    assert not list(tmp_path.glob("a/*-work*"))           # training state removed once a stage is built
    (tmp_path / "b").mkdir()
    build_all(tmp_path / "b", seed=0, quick=True)
    for name in seconds:
        for f in sorted((tmp_path / "a" / name).iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / name / f.name).read_bytes(), f"{name}/{f.name} differs"
    capsys.readouterr()
    again = build_all(tmp_path / "a", seed=0, quick=True)
    assert again == {"tiny-base": 0.0, "tiny-policy": 0.0, "tiny-prm": 0.0}
    assert "already built" in capsys.readouterr().out


def test_all_needs_an_out_and_steps_only_for_lms(tmp_path):
    for argv, needle in ((["all"], "--out"), (["tiny-prm", "--steps", "5", "--out", str(tmp_path / "x")], "--steps")):
        res = subprocess.run([sys.executable, "-m", "rfprm.recipes", *argv], capture_output=True, text=True)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_recipes_pin_the_cpu_kernels_on_x86_only_when_unset(monkeypatch):
    """The same seed writes the same bytes across x86 CPUs only with the kernel set pinned: the
    script re-runs itself under CPU_PIN unless the caller chose one, and never off x86."""
    import os
    import platform
    import runpy
    from rfprm.recipes import CPU_PIN, cpu_pin_env
    assert cpu_pin_env({"A": "1"}, "x86_64") == {"A": "1", **CPU_PIN}
    assert cpu_pin_env({"A": "1"}, "AMD64") == {"A": "1", **CPU_PIN}
    assert cpu_pin_env({"ATEN_CPU_CAPABILITY": "default"}, "x86_64") is None
    assert cpu_pin_env({}, "aarch64") is None

    class Reran(Exception):
        pass

    def execve(path, args, env):
        raise Reran(path, args, env)
    for k in CPU_PIN:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(sys, "argv", ["rfprm/recipes.py", "tiny-prm", "--quick"])
    try:
        runpy.run_module("rfprm.recipes", run_name="__main__")
        raise AssertionError("the entry point did not re-run itself")
    except Reran as e:
        path, args, env = e.args
    assert path == sys.executable and args == [sys.executable, "-m", "rfprm.recipes", "tiny-prm", "--quick"]
    assert all(env[k] == v for k, v in CPU_PIN.items())
