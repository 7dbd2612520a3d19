"""Which of the driver's environment variables reach the actors and trainer workers.

Tokens and tracking settings (``HF_TOKEN``, ``WANDB_API_KEY``, ...) are needed where models
load and metrics are logged, which is in Ray workers, possibly on other nodes. The driver hands
their values to Ray in the job's runtime environment; they are never written into the recipe,
``config.yaml``, run directories or log lines: the recipe (``ray.forward_env``) holds names
only. :func:`lire_ray.runtime.cluster.connect` applies the result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from lire_ray.faults import FAULT_ENV

#: Variables forwarded whenever they are set in the driver (``ray.forward_env`` adds names).
ALWAYS_FORWARDED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "HF_HUB_OFFLINE",
                    "TRANSFORMERS_OFFLINE", "WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR",
                    "MLFLOW_TRACKING_URI", "TOKENIZERS_PARALLELISM", *FAULT_ENV)

#: Set by ``ray job submit`` in the driver: the job's config, runtime environment included.
JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def forwarded_env(names: Iterable[str], environ: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """The variables to forward: ``names`` and :data:`ALWAYS_FORWARDED` that are set.

    Args:
        names: Extra names (the recipe's ``ray.forward_env``).
        environ: The driver's environment (default ``os.environ``).

    Returns:
        ``{name: value}`` for every set variable, in a stable order.
    """
    environ = os.environ if environ is None else environ
    wanted = dict.fromkeys([*ALWAYS_FORWARDED, *names])
    return {name: environ[name] for name in wanted if name in environ}


def job_env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The ``env_vars`` of the runtime environment ``ray job submit`` gave this driver.

    Args:
        environ: The driver's environment (default ``os.environ``).

    Returns:
        The job's ``env_vars`` (empty when it set none), or None outside ``ray job submit``.
    """
    environ = os.environ if environ is None else environ
    if JOB_CONFIG_VAR not in environ:
        return None
    try:
        config = json.loads(environ[JOB_CONFIG_VAR]) or {}
    except ValueError:
        return {}
    return dict((config.get("runtime_env") or {}).get("env_vars") or {})


def submitted_job_env(names: Iterable[str], environ: Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """Under ``ray job submit``: forwarded variables the job's runtime environment lacks.

    The job's own ``env_vars`` already reach every worker, and Ray refuses a driver that sets
    one of them again, so only the others are returned; those are set in the driver's
    environment (the head node's, or the submitter's ``--runtime-env-json``) but would not
    reach workers on other nodes.

    Args:
        names: Extra names (the recipe's ``ray.forward_env``).
        environ: The driver's environment (default ``os.environ``).

    Returns:
        ``{name: value}`` to add to the driver's runtime environment (empty outside ``ray job
        submit``, or when the job sets them all).
    """
    job = job_env_vars(environ)
    if job is None:
        return {}
    return {k: v for k, v in forwarded_env(names, environ).items() if k not in job}
