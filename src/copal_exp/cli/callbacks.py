"""Hydra callbacks registered in ``conf/config.yaml``.

Hydra rewrites a sweep directory's ``multirun.yaml`` at the start of every sweep, before any job can
check the directory. When a sweep is re-run into the same directory with a different configuration
(which its jobs then refuse), the earlier record is kept as ``multirun.<time>.yaml`` beside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class KeepSweepRecord(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        record = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        if not record.is_file():
            return
        if record.read_text() == OmegaConf.to_yaml(config):
            return
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(record.stat().st_mtime))
        kept = record.with_name(f"multirun.{stamp}.yaml")
        record.rename(kept)
        log.info("this sweep directory held another sweep's record: kept as %s", kept)
