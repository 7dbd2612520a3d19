"""In-process torch.distributed helpers for tests that run DeepSpeed in the pytest process."""

from __future__ import annotations


def forget_deepspeed_groups() -> None:
    """Drop DeepSpeed's module-wide cache of process groups.

    DeepSpeed keeps the groups it saw at its first ``initialize``; after a test destroys its
    process group, a later test's new group must not be mixed with the destroyed one.
    """
    import torch.distributed as dist
    from deepspeed.utils import groups

    for name, value in list(vars(groups).items()):
        if isinstance(value, dist.ProcessGroup):
            setattr(groups, name, None)
        elif isinstance(value, dict) and name.startswith("_") and name.endswith(("GROUP",
                                                                                   "GROUPS")):
            value.clear()
