"""Per-step metric sinks: TensorBoard (default), Weights & Biases, MLflow, or none.

Only rank 0 opens a sink. W&B and MLflow are optional dependencies, imported when a recipe
selects them; :func:`check_logger` lets a driver fail before any worker starts.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from lire_ray.errors import ConfigError, DependencyError

LOGGERS = ("tensorboard", "wandb", "mlflow", "none")
_PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}


def check_logger(kind: str) -> None:
    """Fail fast when the chosen logger's package is missing.

    Args:
        kind: ``train.logger``.

    Raises:
        ConfigError: Unknown logger name.
        DependencyError: Its package is not installed (the message says which to install).
    """
    if kind not in LOGGERS:
        raise ConfigError(f"train.logger must be one of {', '.join(LOGGERS)}, got '{kind}'")
    package = _PACKAGES.get(kind)
    if package and importlib.util.find_spec(package) is None:
        raise DependencyError(f"train.logger={kind} needs the '{package}' package: "
                              f"pip install {package} (or set train.logger=none)")


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MetricSink:
    """Writes one record of scalars per optimizer step.

    Args:
        kind: ``tensorboard``, ``wandb``, ``mlflow`` or ``none``.
        log_dir: Directory for TensorBoard event files (and W&B's local files).
        run_name: Run name shown by W&B / MLflow.
        config: Flat-able run configuration recorded by W&B / MLflow.

    Raises:
        ConfigError: Unknown kind.
        DependencyError: The package for ``kind`` is missing.
    """

    def __init__(self, kind: str, *, log_dir: str | Path | None, run_name: str,
                 config: dict[str, Any] | None = None):
        check_logger(kind)
        self.kind = kind
        self._writer: Any = None
        if kind == "tensorboard":
            from tensorboardX import SummaryWriter

            if log_dir is None:
                raise ConfigError("train.logger=tensorboard needs a log directory")
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(logdir=str(log_dir))
        elif kind == "wandb":
            import wandb

            self._writer = wandb.init(project="lire-ray", name=run_name, config=config or {},
                                      dir=str(log_dir) if log_dir else None, reinit=True)
        elif kind == "mlflow":
            import mlflow

            self._writer = mlflow.start_run(run_name=run_name)
            if config:
                mlflow.log_dict(config, "recipe.json")

    def log(self, record: dict[str, Any], step: int) -> None:
        """Record the numeric entries of ``record`` at ``step`` (others are skipped)."""
        values = _scalars(record)
        if self.kind == "tensorboard":
            for key, value in values.items():
                self._writer.add_scalar(f"train/{key}", value, step)
            self._writer.flush()
        elif self.kind == "wandb":
            self._writer.log({f"train/{k}": v for k, v in values.items()}, step=step)
        elif self.kind == "mlflow":
            import mlflow

            mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        """Flush and close the sink."""
        if self.kind == "tensorboard":
            self._writer.close()
        elif self.kind == "wandb":
            self._writer.finish()
        elif self.kind == "mlflow":
            import mlflow

            mlflow.end_run()
