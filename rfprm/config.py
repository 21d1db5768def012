"""ModelConfig: the handful of numbers that define a Qwen2 decoder.

- Read from a Hugging Face `config.json` with `ModelConfig.from_hf_dict` / `from_json`; both
  the older (`rope_theta`, `torch_dtype`) and the newer (`rope_parameters`, `dtype`) spellings
  are accepted, so checkpoints saved by any transformers version load.
- What rfprm does not implement is refused with a clear message rather than silently run
  wrong: RoPE scaling (YaRN and friends) and sliding-window attention in use.
- Named presets in a plain dict: the Qwen2.5 0.5B / 1.5B / 7B shapes and `tiny`, the
  built-in world's size.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RfprmError


@dataclass
class ModelConfig:
    vocab_size: int = 151936        # embedding rows; Qwen pads its 151,665 ids up to this
    hidden_size: int = 896
    intermediate_size: int = 4864   # SwiGLU inner width
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2    # < num_attention_heads means grouped-query attention
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True  # lm_head shares embed_tokens' weight
    torch_dtype: str = "bfloat16"     # the dtype the checkpoint is stored in
    bos_token_id: int | None = None   # Qwen2.5 has no BOS; kept only to write config.json back
    eos_token_id: int | list[int] | None = None
    architectures: list[str] = field(default_factory=lambda: ["Qwen2ForCausalLM"])

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise RfprmError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise RfprmError(f"num_attention_heads {self.num_attention_heads} is not a multiple "
                             f"of num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise RfprmError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- Hugging Face config.json <-> ModelConfig ----
    @classmethod
    def from_hf_dict(cls, d: dict, where: str = "config.json") -> "ModelConfig":
        if d.get("model_type", "qwen2") != "qwen2":
            raise RfprmError(f"{where}: model_type is {d.get('model_type')!r}; rfprm implements "
                             f"only 'qwen2' (Qwen2 / Qwen2.5 checkpoints)")
        if d.get("hidden_act", "silu") != "silu":
            raise RfprmError(f"{where}: hidden_act {d['hidden_act']!r} is not supported (expected 'silu')")
        rope = d.get("rope_parameters") or {}
        scaling = d.get("rope_scaling")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if scaling or rope_type != "default":
            raise RfprmError(f"{where}: RoPE scaling ({scaling or rope_type}) is not implemented; "
                             f"remove rope_scaling to run at the native context length")
        if d.get("use_sliding_window"):
            raise RfprmError(f"{where}: use_sliding_window=true is not implemented "
                             f"(Qwen2.5 checkpoints ship it false)")
        try:
            return cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=int(d["hidden_size"]),
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=int(d["num_attention_heads"]),
                num_key_value_heads=int(d.get("num_key_value_heads") or d["num_attention_heads"]),
                max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
                rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                # transformers' Qwen2Config defaults to untied embeddings
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                torch_dtype=str(d.get("dtype") or d.get("torch_dtype") or "float32"),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=d.get("eos_token_id"),
                architectures=list(d.get("architectures") or ["Qwen2ForCausalLM"]),
            )
        except KeyError as e:
            raise RfprmError(f"{where}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise RfprmError(f"{where}: bad value ({e})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise RfprmError(f"{path.parent}: no config.json (expected a Hugging Face checkpoint directory)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RfprmError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise RfprmError(f"{path}: expected a JSON object")
        return cls.from_hf_dict(d, where=str(path))

    def to_hf_dict(self) -> dict:
        return {
            "architectures": self.architectures,
            "model_type": "qwen2",
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.torch_dtype,
            "use_sliding_window": False,
            "sliding_window": None,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# Shapes of the public Qwen2.5 checkpoints (from their config.json files) and the world's size.
PRESETS: dict[str, dict] = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen2.5-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       tie_word_embeddings=False),
    # the built-in world: ~1.5M parameters, trained on a laptop CPU in minutes
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=6,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                 rope_theta=10000.0, tie_word_embeddings=True, torch_dtype="float32"),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise RfprmError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
