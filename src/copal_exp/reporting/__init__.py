"""Reports of finished sweeps: runs read back (:mod:`.runs`), tables (:mod:`.tables`), figures
(:mod:`.figures`) and the W&B comparison view (:mod:`.wandb_view`). The names below are the API a
notebook uses; ``python -m copal_exp.report`` is the command."""

from copal_exp.reporting.figures import bwt_curve, forgetting_curves, heatmaps
from copal_exp.reporting.runs import collect, job_label, run_label
from copal_exp.reporting.tables import comparison_table, forgetting_table_frame, swept_keys, write_table

__all__ = ["bwt_curve", "collect", "comparison_table", "forgetting_curves", "forgetting_table_frame", "heatmaps",
           "job_label", "run_label", "swept_keys", "write_table"]
