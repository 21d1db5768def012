"""rfprm: ReasonFlux-PRM from scratch in plain PyTorch.

The public surface (see README.md):
    model = rfprm.load_model(dir, device="cpu", dtype=None)
    tok = rfprm.load_tokenizer(dir)
    out = rfprm.generate(model, prompts, max_new_tokens=64, ...)
"""
from .checkpoint import load_model, save_model
from .generate import generate
from .errors import resolve_path
from .tokenizer import Tokenizer, load_tokenizer
from .config import ModelConfig, preset
from .errors import RfprmError
from .model import KVCache, Qwen2ForCausalLM, Qwen2Model
from .prm import PRM, PRMScore, load_prm

__all__ = ["load_model", "save_model", "resolve_path", "generate", "load_tokenizer", "Tokenizer", "ModelConfig", "preset", "RfprmError",
           "KVCache", "Qwen2ForCausalLM", "Qwen2Model", "PRM", "PRMScore", "load_prm"]
