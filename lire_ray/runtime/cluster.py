"""Connecting to Ray, starting named actors with resources from the recipe, calling them.

Nothing hard-codes resources on a class: :func:`start_role` applies the recipe's
``resources.<role>`` with ``ray.remote(**options)(cls)``. Actors are named ``<role>-<i>`` in a
namespace of their own job or run, so the Ray dashboard shows the sampler, reward, reference and
trainer roles, and two runs on one cluster never find each other's actors. :func:`call_role`
is the one boundary where Ray's actor errors become :class:`~lire_ray.errors.ActorFailure`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lire_ray.config import ActorResources, RayConfig, ResourcesConfig
from lire_ray.env_forward import ALWAYS_FORWARDED, forwarded_env, submitted_job_env
from lire_ray.errors import ActorFailure, ConfigError
from lire_ray.faults import fault_env

log = logging.getLogger(__name__)

#: Environment of the actors and workers when third-party INFO logs are hidden (the default).
QUIET_ENV = {"VLLM_LOGGING_LEVEL": "WARNING", "TRANSFORMERS_VERBOSITY": "error",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
             "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}

#: Environment variables the driver forwards to every actor and trainer worker (when set);
#: the recipe's ``ray.forward_env`` adds names.
FORWARDED_ENV = ALWAYS_FORWARDED


@dataclass(frozen=True)
class RayHandle:
    """How this process is attached to Ray."""

    started_here: bool
    address: str
    dashboard_url: str | None


def connect(cfg: RayConfig, *, runtime_env: dict | None = None) -> RayHandle:
    """Join the configured or running Ray cluster, or start a local one.

    Order: ``ray.address`` from the recipe (``local``: always a new local cluster); else
    ``RAY_ADDRESS`` (set by ``ray job submit``) or a cluster started with ``ray start`` on this
    machine; else a new local cluster with ``ray.num_cpus`` CPUs and the dashboard bound to
    ``ray.dashboard_host`` (127.0.0.1 unless configured otherwise).

    Outside ``ray job submit`` (whose runtime environment the job brings), the actors and
    trainer workers get the project on their ``PYTHONPATH``. They always get the driver's values
    of the environment variables in :data:`FORWARDED_ENV` (tokens, tracking settings) and
    ``ray.forward_env`` (under ``ray job submit``, those the job's runtime environment does not
    set already), which are never written anywhere.
    """
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayHandle(False, ctx.gcs_address, None)
    import ray.data

    verbose = os.environ.get("LIRE_VERBOSE") == "1"
    kwargs: dict[str, Any] = {"namespace": cfg.namespace, "log_to_driver": True}
    if not verbose:
        kwargs["logging_config"] = ray.LoggingConfig(log_level="WARNING")
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = False
        data_ctx.print_on_execution_start = False
    if runtime_env is None and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        # Outside `ray job submit --working-dir`, workers on this machine import the project
        # from its checkout, whatever their working directory.
        root = str(Path(__file__).resolve().parents[2])
        env = forwarded_env(cfg.forward_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        if not verbose:
            env.update(QUIET_ENV)
        runtime_env = {"env_vars": env}
    elif runtime_env is None and submitted_job_env(cfg.forward_env):
        runtime_env = {"env_vars": submitted_job_env(cfg.forward_env)}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address is None or address == "local":
        try:
            if address == "local":
                raise ConnectionError("a new local cluster was asked for")
            info = _init(address="auto", **kwargs)
            log.info("joined the running Ray cluster at %s", _address_info(info).get("address"))
            return RayHandle(False, _address_info(info).get("address", "auto"),
                             info.dashboard_url or None)
        except (ConnectionError, RuntimeError):
            pass
        # Ray's runtime-env agent logs each runtime env, forwarded values included, at INFO
        # into the session's logs; its processes read their log level from here.
        os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
        info = _init(num_cpus=cfg.num_cpus, include_dashboard=True,
                        dashboard_host=cfg.dashboard_host, **kwargs)
        # Helper processes Ray Train spawns look the cluster up by address; pin it so that
        # another Ray instance on the same machine is never picked by mistake.
        os.environ["RAY_ADDRESS"] = _address_info(info)["address"]
        log.info("started a local Ray cluster (dashboard: %s)", info.dashboard_url or "off")
        return RayHandle(True, _address_info(info).get("address", "local"),
                         info.dashboard_url or None)
    info = _init(address=address, **kwargs)
    return RayHandle(False, address, info.dashboard_url or None)


def _init(**kwargs):
    """``ray.init``, keeping this process's own logging as it was: Ray's ``logging_config``
    (which quiets Ray's loggers in every process) also lowers the driver's root logger and adds
    a handler of its own."""
    import ray

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return ray.init(**kwargs)
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def _address_info(info: Any) -> dict:
    """``ray.init``'s ``address_info`` (its context type does not declare it)."""
    return dict(getattr(info, "address_info", {}) or {})


def namespace_for(base: str, *parts: object) -> str:
    """A Ray namespace of one run or job: ``base`` plus a short digest of ``parts``.

    The role actors are named ``sampler-0``, ``reward-0``, ...; two runs or jobs sharing a
    cluster must not find each other's actors under those names.
    """
    digest = hashlib.sha1(":".join(str(p) for p in parts).encode()).hexdigest()[:8]
    return f"{base}-{digest}"


def _translated(role: str, method: str, refs):
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from lire_ray.errors import LireError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, LireError):
            raise exc.cause from exc  # a data or config problem the actor found: show it as is
        raise ActorFailure(role, f"{method} raised {exc.cause!r}") from exc
    except RayActorError as exc:
        raise ActorFailure(role, f"{method}: actor died and was not restarted: {exc}") from exc


def call_role(actors: Sequence, role: str, method: str, *args, **kwargs):
    """Call ``method`` on one actor of a role (chosen at random) and wait for the result.

    Raises:
        ActorFailure: The actor died and could not be restarted, or the method failed; the
            message names the role and method, ``__cause__`` holds Ray's error.
        LireError: The method raised one of the project's own errors (bad data, bad config),
            re-raised as it is.
    """
    if not actors:
        raise ActorFailure(role, f"{method}: no {role} actor was started")
    actor = actors[random.randrange(len(actors))]
    return _translated(role, method, getattr(actor, method).remote(*args, **kwargs))


def map_role(actors: Sequence, role: str, method: str, items: Sequence, *, chunk: int,
             **kwargs) -> list:
    """Call ``method(chunk_of_items, **kwargs)`` on a role's actors in parallel, round robin,
    and concatenate the results in order (each call must return one result per item).

    Raises:
        ActorFailure, LireError: As for :func:`call_role`.
    """
    if not actors:
        raise ActorFailure(role, f"{method}: no {role} actor was started")
    chunks = [list(items[i:i + chunk]) for i in range(0, len(items), max(1, chunk))]
    refs = [getattr(actors[i % len(actors)], method).remote(c, **kwargs)
            for i, c in enumerate(chunks)]
    return [x for part in _translated(role, method, refs) for x in part]


def actor_options(res: ActorResources, *, name: str, namespace: str) -> dict:
    """``ray.remote`` / ``.options`` keywords for one role actor."""
    opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": res.max_restarts,
            "max_task_retries": res.max_restarts, "name": name, "namespace": namespace,
            "lifetime": None}
    if res.resources:
        opts["resources"] = dict(res.resources)
    if fault_env():  # fault tests on a cluster started before they set the point
        opts["runtime_env"] = {"env_vars": fault_env()}
    return opts


def start_role(cls, role: str, res: ActorResources, namespace: str, *args, **kwargs) -> list:
    """Start ``res.num_actors`` named actors of ``cls`` and wait until each is up.

    Returns:
        The actor handles, named ``<role>-0``, ``<role>-1``, ...

    Raises:
        ActorFailure: An actor failed in its constructor (the cause is attached).
        ConfigError: The cluster can never satisfy the requested resources.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    _check_feasible(role, res)
    remote_cls = ray.remote(cls)
    handles = [remote_cls.options(**actor_options(res, name=f"{role}-{i}", namespace=namespace))
               .remote(*args, **kwargs) for i in range(res.num_actors)]
    try:
        ray.get([h.ping.remote() for h in handles])
    except (RayActorError, RayTaskError) as exc:
        for h in handles:
            ray.kill(h, no_restart=True)
        raise ActorFailure(role, f"could not start: {exc}") from exc
    log.info("started %d %s actor(s)", len(handles), role)
    return handles


def _check_feasible(role: str, res: ActorResources) -> None:
    import ray

    total = ray.cluster_resources()
    for key, need in (("CPU", res.num_cpus), ("GPU", res.num_gpus), *res.resources.items()):
        if need and total.get(key, 0) < need:
            raise ConfigError(f"resources.{role} asks for {key}={need} per actor but the Ray "
                              f"cluster has {total.get(key, 0)} in all")


def check_feasible(resources: ResourcesConfig, roles: tuple[str, ...] = ("sampler", "reward")
                   ) -> None:
    """Refuse, before any actor starts, resources the connected cluster can never provide.

    Raises:
        ConfigError: Names the role, the resource, what it asks for and what the cluster has.
    """
    import ray

    for role in roles:
        _check_feasible(role, getattr(resources, role))
    tr = resources.trainer
    need = {"CPU": tr.cpus_per_worker * tr.num_workers,
            "GPU": (tr.gpus_per_worker * tr.num_workers) if tr.use_gpu else 0.0,
            **{k: v * tr.num_workers for k, v in tr.resources_per_worker.items()}}
    total = ray.cluster_resources()
    for key, amount in need.items():
        if amount and total.get(key, 0) < amount:
            raise ConfigError(f"resources.trainer asks for {key}={amount} in all "
                              f"({tr.num_workers} workers) but the Ray cluster has "
                              f"{total.get(key, 0)}")


def close_role(handles: list, *, timeout_s: float) -> None:
    """Ask a role's actors to release what they hold (``close``), waiting at most
    ``timeout_s``; an actor that is gone or does not answer in time is left to be killed."""
    import ray

    refs = []
    for h in handles:
        try:
            refs.append(h.close.remote())
        except Exception:  # already gone
            pass
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)


def stop_role(handles: list) -> None:
    """Kill a role's actors (no restart)."""
    import ray

    for h in handles:
        try:
            ray.kill(h, no_restart=True)
        except Exception:  # already gone
            pass


def disconnect(handle: RayHandle) -> None:
    """Shut down the local cluster this process started (a joined cluster is left running)."""
    import ray

    if handle.started_here:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
