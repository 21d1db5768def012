"""rfprm: ReasonFlux-PRM from scratch in plain PyTorch.

The public surface:
    model = rfprm.load_model(dir, device="cpu", dtype=None)
    tok = rfprm.load_tokenizer(dir)
    out = rfprm.generate(model, prompts, max_new_tokens=64, ...)
    prm = rfprm.load_prm(dir); s = prm.score(problem, trajectory, response)

Layers, one way: kernels -> model -> checkpoint/generate -> steps/labels/prm ->
selection/bon/rl -> the scripts. `rfprm.world` (the built-in arithmetic task) is a leaf beside
the library: nothing here imports it; the scripts hand its pieces in as a `rfprm.task.Task`.
"""
from .checkpoint import load_model, save_model
from .config import ModelConfig, preset
from .errors import RfprmError, resolve_path
from .generate import generate
from .model import KVCache, Qwen2ForCausalLM, Qwen2Model
from .prm import PRM, PRMScore, load_prm
from .task import TEXT_TASK, Task
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["load_model", "save_model", "resolve_path", "generate", "load_tokenizer", "Tokenizer", "ModelConfig",
           "preset", "RfprmError", "KVCache", "Qwen2ForCausalLM", "Qwen2Model", "PRM", "PRMScore", "load_prm",
           "Task", "TEXT_TASK"]
