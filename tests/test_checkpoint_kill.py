"""A training run killed by SIGKILL while writing a checkpoint leaves the previous one loadable.

`rfprm.trainer.save_train_state` writes `train_state/` through `rfprm.errors.atomic_dir`: the
new checkpoint goes to a temporary directory, then the old `train_state/` is moved aside to
`.train_state.old` and the new one renamed into place. A kill can land at any point of that, so
the tests stop a real training subprocess at the two dangerous points and kill it there:

- inside the write (the new checkpoint half written in its temporary directory);
- between the two renames, when `train_state/` does not exist at all and the previous
  checkpoint lives only in `.train_state.old`.

The child process pauses at the chosen point, writes a marker file, and waits; the test sees
the marker and sends SIGKILL, so where the kill lands is deterministic, not a race. Then
`load_train_state` must return the earlier step, and `--resume` must finish the run with
exactly the weights of an uninterrupted one.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_lm

from rfprm.selection import lm_loss, make_batches
from rfprm.trainer import TrainConfig, load_train_state, make_optimizer, train

REPO = Path(__file__).resolve().parents[1]
CFG = dict(steps=6, lr=3e-3, warmup=1, log_every=2, ckpt_every=2)  # checkpoints after steps 2 and 4

# The child: the same tiny run as `tiny_lm`/`batches` below, with one hook that pauses it at
# the point named by argv[2] during the second checkpoint (the one after step 4).
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    import rfprm.trainer as trainer
    from rfprm.config import preset
    from rfprm.model import Qwen2ForCausalLM, init_weights
    from rfprm.selection import lm_loss, make_batches

    out, where, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    saves = 0

    def pause():
        marker.write_text("paused")
        while True:
            time.sleep(1)

    real_save_file, real_replace = trainer.save_file, os.replace

    def save_file(tensors, path, *a, **k):        # pauses inside the temporary directory
        global saves
        saves += 1
        real_save_file(tensors, path, *a, **k)
        if where == "inside" and saves == 2:
            pause()

    def replace(src, dst, *a, **k):               # pauses after train_state/ was moved aside
        real_replace(src, dst, *a, **k)
        if where == "between" and Path(dst).name == ".train_state.old":
            pause()

    trainer.save_file, os.replace = save_file, replace
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(preset("tiny", vocab_size=64, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    init_weights(model)
    batch_at = make_batches([([1, a], [a + 1, a + 2, 2]) for a in range(3, 40)], 8, seed=1, pad_id=0)
    trainer.train(model, lm_loss, batch_at, trainer.TrainConfig(**CFG), out_dir=out)
""")


def batches():
    return make_batches([([1, a], [a + 1, a + 2, 2]) for a in range(3, 40)], 8, seed=1, pad_id=0)


def run_and_kill(out: Path, where: str, tmp_path: Path):
    """Start the child, wait until it pauses at `where`, SIGKILL it."""
    marker = tmp_path / f"paused-{where}"
    script = tmp_path / "child.py"
    script.write_text(f"CFG = {CFG!r}\n" + CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), where, str(marker)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the child exited ({proc.returncode}) before pausing: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached the pause point")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("where", ["inside", "between"])
def test_kill_while_checkpointing_leaves_previous_checkpoint(tmp_path, where):
    out = tmp_path / "run"
    run_and_kill(out, where, tmp_path)
    if where == "between":  # the kill really landed in the window where train_state/ is gone
        assert not (out / "train_state").exists() and (out / ".train_state.old").is_dir()

    model = tiny_lm(seed=7)
    step, history = load_train_state(out, model, make_optimizer(model, TrainConfig(**CFG)))
    assert step == 2 and [h["step"] for h in history] == [2]
    assert not list(out.glob(".train_state.*.tmp"))   # the killed write's temporary directory is gone

    full = tiny_lm()  # uninterrupted reference run
    train(full, lm_loss, batches(), TrainConfig(**CFG), out_dir=tmp_path / "full")
    resumed = tiny_lm(seed=5)  # another init: everything must come from the checkpoint
    hist = train(resumed, lm_loss, batches(), TrainConfig(**CFG), out_dir=out, resume=True)
    assert [h["step"] for h in hist] == [2, 4, 6]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not (out / ".train_state.old").exists()  # the next save cleaned up
