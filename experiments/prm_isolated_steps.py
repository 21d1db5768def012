"""Diagnostic for issue #5: can a PRM started from tiny-policy learn to verify one-step traces?

    python experiments/prm_isolated_steps.py STEPS LAYOUT [LM_AUX]   # e.g. 600 rfprm, 1500 qwen 0.5

20,000 one-step traces `a op b = c`, half with a slipped result, binary targets, an optional
auxiliary LM loss on the traces whose step is right. It prints first-error F1 / step AUC on held-out one-step traces and on the world's
held-out multi-step traces. Founding session: without the auxiliary loss, 600 steps gave AUC
50.9 (rfprm layout) and 50.0 (qwen layout). With `1500 rfprm 0.5` the PRM verified held-out
one-step traces (F1 95.0, AUC 98.2, 608 s) but did not transfer to multi-step traces
(AUC 49.0). Caveat found later: one-operation problems of the world have only about 660
distinct equations, so this PRM may have memorised a table rather than learnt to verify.
Not a test.
"""
import sys, random, time, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
import rfprm, train_prm
from rfprm import world
from rfprm.world.teachers import slipped_values
from rfprm.prm_train import PRMTrainSpec, train_prm_model, evaluate_prm
from rfprm.recipes import held_out_texts
steps = int(sys.argv[1]); layout = sys.argv[2]
lm_aux = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0  # auxiliary LM loss on the right steps
def iso(n, seed):
    rng = random.Random(seed); out = []
    for p in world.make_problems(n, seed, exclude=held_out_texts()):
        op = p.ops[0]; good = rng.random() < 0.5
        c = op.result if good else slipped_values(op.result, rng)[0]
        out.append({"problem": f"Compute {op.a} {op.op} {op.b}.", "trajectory": f"First, {op.a} {op.op} {op.b} = {c}.",
                    "response": f"{op.a} {op.op} {op.b} gives {c}, so the answer is \\boxed{{{c}}}",
                    "answer": str(op.result), "step_rewards": [1.0 if good else 0.0], "trajectory_reward": 1.0 if good else 0.0,
                    "first_error": -1 if good else 0,
                    "label_parts": {"quality": [1.0 if good else 0.0]}})
    return out
train = iso(20000, 101); val = iso(300, 202); test = iso(300, 303)
lm = rfprm.load_model('tiny-policy'); tok = rfprm.load_tokenizer('tiny-policy')
t = time.time()
prm = train_prm_model(lm, tok, train, PRMTrainSpec(steps=steps, batch_size=32, lr=1e-3, lm_aux=lm_aux, ckpt_every=0), layout)
r = evaluate_prm(prm, val, test)
print("isolated steps", layout, steps, {k: round(v, 1) for k, v in r.items() if isinstance(v, float)}, f"{time.time()-t:.0f}s", flush=True)
args = train_prm.parse_args([]); _, tval, ttest = train_prm.world_splits(args)
r2 = evaluate_prm(prm, tval, ttest)
print("transfer to traces", {k: round(v, 1) for k, v in r2.items() if isinstance(v, float)}, flush=True)
