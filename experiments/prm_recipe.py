"""Diagnostic for issue #5: how fast does a tiny PRM learn to verify multi-step traces?

    python experiments/prm_recipe.py --steps 3000 --mix sloppy=0.5,clean=0.2,lucky=0.15,wandering=0.15
    python experiments/prm_recipe.py --careless 0.5                  # an error-dense pool
    python experiments/prm_recipe.py --extra-layers 3 --freeze --lm-aux 0 --lr 2e-3
    python experiments/prm_recipe.py --extra-layers 2 --freeze --lm-aux 0 --token-aux 1 --device cuda

Step-only training (no rollouts: lambda_final = 0) on world traces labelled with the fused step
labels, evaluated every --every steps on 400 held-out traces (threshold chosen on 200
validation traces). Options: the training mix; replacing a share of the pool by "careless"
traces (every step slips with --slip-p, later steps compute from the written values: an
error-dense pool, not one of the world's teachers); fresh decoder layers on top of the LM
(output projections zero-initialised, so the PRM starts as the LM plus a head); freezing the
LM's own layers; a token-surprise probe (--token-aux: the frozen LM's -log p of every token is
the target of a linear probe on the first fresh layer, which can see the LM's prediction one
position back, so that the next layer can gather a step's flags at its marker). Not a test;
it prints one line per evaluation so recipes can be compared by their curves. What each run
printed is in the README ("How the recipe was found"); the GPU sweeps there ran before
training batches were length-bucketed (--bucket 1 comes closest to them).
"""
import argparse, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rfprm
from rfprm import world
from rfprm.labels import world_labeller
from rfprm.prm_train import PRMTrainSpec, train_prm_model, evaluate_prm, hide_eval_fields
from rfprm.recipes import held_out_texts
from rfprm.world.teachers import parse_mix, DEFAULT_MIX

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--every", type=int, default=250)
ap.add_argument("--n-train", type=int, default=20000)
ap.add_argument("--mix", default="")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--lm-aux", type=float, default=0.5)
ap.add_argument("--model", default="tiny-policy")
ap.add_argument("--layout", default="rfprm")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--careless", type=float, default=0.0, help="share of the pool replaced by careless traces")
ap.add_argument("--slip-p", type=float, default=0.5, help="careless: each step slips with this probability")
ap.add_argument("--extra-layers", type=int, default=0, help="decoder layers added on top of the LM (zero-init outputs)")
ap.add_argument("--freeze", action="store_true", help="train only the extra layers and the head")
ap.add_argument("--binary", action="store_true", help="targets = judge quality >= 0.99 (not fused)")
ap.add_argument("--token-aux", type=float, default=0.0,
                help="weight of the token-surprise target (needs --extra-layers >= 2 and --freeze)")
ap.add_argument("--surprise-cap", type=float, default=6.0, help="token surprise (nats) is clipped here, then /cap")
ap.add_argument("--device", default="cpu")
ap.add_argument("--bucket", type=int, default=8, help="batches drawn together and sorted by length (1 = random)")
ap.add_argument("--n-test", type=int, default=400)
a = ap.parse_args()
torch.set_num_threads(a.threads)
mix = parse_mix(a.mix) if a.mix else DEFAULT_MIX
used = set(held_out_texts())
train = world.make_traces(a.n_train, 1, mix=mix, exclude=frozenset(used)); used |= {r["problem"] for r in train}
val = world.make_traces(200, 2, exclude=frozenset(used)); used |= {r["problem"] for r in val}
test = world.make_traces(a.n_test, 3, exclude=frozenset(used)); used |= {r["problem"] for r in test}
def careless(n, seed, exclude):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_sweep import careless_traces     # the same generator, shared
    return careless_traces(n, seed, exclude, a.slip_p)
if a.careless > 0:
    k = int(a.careless * len(train))
    train = train[:len(train) - k] + careless(k, 7, frozenset(used))
t0 = time.time()
lab = world_labeller(None)(hide_eval_fields(train), progress=False)
if a.binary:
    for r in lab:
        r["step_rewards"] = [float(q >= 0.99) for q in r["label_parts"]["quality"]]
print(f"labelled {len(lab)} in {time.time()-t0:.0f}s", flush=True)
lm, tok = rfprm.load_model(a.model), rfprm.load_tokenizer(a.model)
if a.extra_layers:
    from rfprm.model import DecoderLayer, init_weights
    cfg = lm.cfg.replace(num_hidden_layers=lm.cfg.num_hidden_layers + a.extra_layers)
    torch.manual_seed(0)
    for i in range(a.extra_layers):
        layer = DecoderLayer(cfg, lm.cfg.num_hidden_layers + i)
        init_weights(layer)
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)   # starts as the identity
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
        lm.model.layers.append(layer)
    lm.cfg = lm.model.cfg = cfg
if a.freeze:  # the LM's own layers and embeddings keep its predictions exactly (deepcopy keeps the flags)
    for p in lm.parameters():
        p.requires_grad_(False)
    for layer in lm.model.layers[lm.cfg.num_hidden_layers - a.extra_layers:]:
        layer.requires_grad_(True)
    lm.model.norm.requires_grad_(True)
t0 = time.time()
def cb(step, prm):
    if step % a.every == 0 or step == a.steps:
        prm.eval(); r = evaluate_prm(prm, val, test); prm.train()
        print(f"step {step} {time.time()-t0:.0f}s F1 {r['f1']:.1f} flawed {r['flawed_acc']:.1f} "
              f"flawless {r['flawless_acc']:.1f} AUC {r['auc']:.1f} th {r['threshold']:.3f}", flush=True)
lm = lm.to(a.device)
spec = PRMTrainSpec(steps=a.steps, batch_size=a.batch_size, lr=a.lr, lm_aux=a.lm_aux, lambda_final=0.0,
                    ckpt_every=0, bucket=a.bucket)
if not a.token_aux:
    train_prm_model(lm, tok, lab, spec, a.layout, callback=cb, desc="prm")
    sys.exit()
# Token-surprise auxiliary: the frozen LM's own surprise -log p(x_p | x_<p) at every token is a
# target for a probe on the FIRST extra layer's output at p. That layer can read the LM's
# prediction at p-1 (attention sees the layer below) and the token at p, so the target is
# computable there; the next extra layer can then gather the flags of a step at its <extra_0>.
import random
import torch.nn.functional as F
from rfprm.kernels import rms_norm
from rfprm.prm import PRM, prm_loss
from rfprm.prm_layout import collate, prm_examples
from rfprm.trainer import TrainConfig, train
assert a.freeze and a.extra_layers >= 2
n_trunk = lm.cfg.num_hidden_layers - a.extra_layers
norm_w, eps = lm.model.norm.weight.detach().clone(), lm.cfg.rms_norm_eps
torch.manual_seed(0)
prm = PRM.from_lm(lm, tok, layout=a.layout)
prm.tok_probe = torch.nn.Linear(lm.cfg.hidden_size, 1).to(a.device)
examples = prm_examples(prm.tok, lab, a.layout, prm.max_len, prm.response_as_step)
pad = prm.tok.pad_id if prm.tok.pad_id is not None else 0
def batch_at(step, micro):
    rng = random.Random(step * 101 + micro)
    return collate([examples[rng.randrange(len(examples))] for _ in range(a.batch_size)], pad)
def loss_fn(prm, batch):
    batch = batch.to(prm.device); m = prm.model; ids = batch.input_ids
    B, T = ids.shape
    cos, sin = m.rope(torch.arange(T, device=ids.device).expand(B, T))
    with torch.no_grad():
        x = m.embed_tokens(ids)
        for layer in m.layers[:n_trunk]:
            x = layer(x, cos, sin, None, None)
        logp = F.log_softmax((rms_norm(x[:, :-1], norm_w, eps) @ m.embed_tokens.weight.t()).float(), -1)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)          # surprise of token p+1
        target = nll.clamp(max=a.surprise_cap) / a.surprise_cap
        valid = (ids[:, 1:] != pad) & (ids[:, 1:] != prm.tok.step_id) & (ids[:, :-1] != prm.tok.step_id)
    h = x
    for i, layer in enumerate(m.layers[n_trunk:]):
        h = layer(h, cos, sin, None, None)
        if i == 0:
            probe = prm.tok_probe(h[:, 1:]).squeeze(-1).float()
    loss, metrics = prm_loss(prm, batch, 1.0, 0.0, m.norm(h))
    tok_loss = ((probe - target).square() * valid).sum() / valid.sum()
    metrics["tok"] = tok_loss.item()
    return loss + a.token_aux * tok_loss, metrics
cfg = TrainConfig(steps=a.steps, lr=a.lr, warmup=min(30, a.steps // 5), ckpt_every=0, log_every=10)
train(prm, loss_fn, batch_at, cfg, desc="prm", callback=cb)
