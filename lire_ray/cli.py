"""Shared command-line plumbing for the scripts in ``jobs/``.

Every job takes ``--config RECIPE`` (default ``configs/tiny.yaml``), ``--debug`` and any number
of ``key.path=value`` overrides. :func:`run_job` turns a :class:`~lire_ray.errors.LireError` into
a short message on stderr and exit status 2 (a traceback only with ``--debug``), and Ctrl-C into
exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from lire_ray import output
from lire_ray.config import DEFAULT_RECIPE, Recipe, load_recipe
from lire_ray.errors import ConfigError, LireError

log = logging.getLogger("lire_ray")


def job_parser(description: str, *, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every recipe-driven job shares.

    Args:
        description: The job's one-paragraph help text.
        epilog: Extra help printed after the options (examples, aliases).

    Returns:
        A parser with ``--config``, ``--debug`` and positional ``overrides``.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, metavar="RECIPE",
                        help=f"YAML recipe (default: {DEFAULT_RECIPE.relative_to(DEFAULT_RECIPE.parents[1])})")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and debug logging")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="recipe overrides, e.g. train.lr=1e-5 evolve.steps=3")
    return parser


#: Short keys every job takes: ``loss=dpo`` means ``loss.name=dpo``, and so on.
SHORT_KEYS = {"loss": "loss.name", "data": "data.train", "policy": "model.policy"}


def parse_recipe(args: argparse.Namespace, aliases: dict[str, str] | None = None) -> Recipe:
    """Load the recipe named by ``args.config`` with ``args.overrides`` applied (and show
    third-party logs when it says ``run.verbose``).

    The short keys of :data:`SHORT_KEYS` (``loss=``, ``data=``, ``policy=``) work in every job;
    ``aliases`` adds or overrides a job's own. The loss and its parameters are checked here,
    before any job starts Ray.

    Raises:
        ConfigError: A bad recipe, override, loss name or loss parameter.
    """
    from lire_ray.losses import build_loss

    recipe = load_recipe(args.config, args.overrides, aliases={**SHORT_KEYS, **(aliases or {})})
    build_loss(recipe.loss.name, recipe.loss.params)
    if recipe.run.verbose:
        os.environ[VERBOSE_ENV] = "1"
        quiet_third_party(False)
    return recipe


def take_job_options(overrides: list[str], names: tuple[str, ...],
                     required: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Take a job's own ``name=value`` options (``output=``, ``input=``, ...) out of the overrides.

    Args:
        overrides: The command line's ``key=value`` arguments.
        names: The job's option names; every other argument stays a recipe override.
        required: Options that must be given.

    Returns:
        The remaining recipe overrides, and the options given, by name.

    Raises:
        ConfigError: An option is given without a value, or a required one is missing.
    """
    rest, opts = [], {}
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and key in names:
            if not value:
                raise ConfigError(f"{key}= needs a value")
            opts[key] = value
        else:
            rest.append(text)
    missing = [f"{name}=" for name in required if name not in opts]
    if missing:
        raise ConfigError(f"missing job option {', '.join(missing)}")
    return rest, opts


#: Set (to "1") when third-party INFO logs are wanted; read by the runtime for its processes.
VERBOSE_ENV = "LIRE_VERBOSE"
#: Loggers of other libraries kept at WARNING unless verbose.
THIRD_PARTY = ("urllib3", "filelock", "matplotlib", "httpx", "ray.data", "ray.train", "vllm",
               "DeepSpeed", "deepspeed", "transformers")


def quiet_third_party(quiet: bool) -> None:
    """Keep other libraries' loggers in this process at WARNING (``quiet``) or let them log."""
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def quiet_output() -> contextlib.AbstractContextManager:
    """A context in which every line but the project's own goes to the run's log file
    (:class:`lire_ray.output.Diversion`), unless ``--debug`` or ``run.verbose`` asked to see
    them."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return contextlib.nullcontext()
    return output.Diversion()


def setup_logging(debug: bool) -> None:
    """Log lines with a timestamp to stderr; DEBUG with ``--debug``, which also shows the
    INFO logs of vLLM, Ray Data, Ray Train, DeepSpeed and transformers (else hidden)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if debug:
        os.environ[VERBOSE_ENV] = "1"
    quiet_third_party(not debug and os.environ.get(VERBOSE_ENV) != "1")
    if not debug:
        # Per-file progress bars of tiny local loads only bury the job's own progress lines.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass


def run_job(main: Callable[[argparse.Namespace], int | None],
            parser: argparse.ArgumentParser, argv: list[str] | None = None) -> NoReturn:
    """Parse arguments, run ``main(args)`` and exit with a clean status.

    Args:
        main: The job body; returns an exit status or ``None`` for 0.
        parser: The job's parser (usually from :func:`job_parser`).
        argv: Arguments (default ``sys.argv[1:]``).
    """
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("LIRE_DEBUG") == "1"
    setup_logging(debug)
    try:
        status = main(args)
    except LireError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        print("(run with --debug for a traceback)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
