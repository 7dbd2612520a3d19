"""A plain PyTorch training engine for one CPU worker, with the DeepSpeed engine's interface.

On one CPU worker DeepSpeed partitions nothing and adds work to every step: its CPU optimizer
path runs an unfused AdamW (measured on SmolLM2-135M, 134.5 M parameters, one thread: 0.59 s a
step against 0.067 s for torch's fused AdamW), ZeRO-2 keeps flat fp32 copies of gradients and
parameters (about 1 s and 1.5 GB a step there), and even ZeRO-0 copies every gradient into
flat buckets for an all-reduce over a world of one. :class:`TorchEngine` does what a step
needs and nothing else: ``loss.backward()``, ``clip_grad_norm_`` (whose return value is the
recorded gradient norm), torch's fused AdamW (foreach where the fused kernel is missing) and
the learning-rate schedule; the same update as DeepSpeed's fp32 ZeRO-0 step with AdamW, which
the tests check against each other and against a hand-written loop.

It exposes the subset of ``DeepSpeedEngine`` that :mod:`lire_ray.training` uses (``module``,
``backward``, ``step``, ``get_lr``, ``set_gradient_accumulation_boundary``,
``zero_optimization_stage``, ``get_global_grad_norm``, ``save_checkpoint`` /
``load_checkpoint``, ``lr_scheduler`` / ``basic_optimizer`` / ``optimizer``), so the training
step, checkpoints and the resident group take either. GPU workers and multi-worker runs keep
DeepSpeed (:func:`lire_ray.training.engine.engine_kind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_FILE = "model_states.pt"
OPTIM_FILE = "optim_states.pt"


def make_adamw(params, *, lr: float, betas: tuple[float, float], eps: float,
               weight_decay: float):
    """torch's AdamW, fused where this torch has the fused kernel for the parameters' device
    (CPU since torch 2.4), else the multi-tensor (foreach) implementation.

    Args:
        params: The trainable parameters.
        lr, betas, eps, weight_decay: AdamW's hyperparameters.

    Returns:
        A ``torch.optim.AdamW``.
    """
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps,
                                 weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device / dtype
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps,
                                 weight_decay=weight_decay, foreach=True)


class TorchEngine:
    """One worker's model, AdamW and schedule, stepped like a DeepSpeed ZeRO-0 fp32 engine.

    Args:
        model: The policy; only parameters with ``requires_grad`` are optimised.
        optimizer: The optimizer over those parameters.
        scheduler_factory: ``optimizer -> LambdaLR`` (the cosine-with-warmup schedule).
        max_grad_norm: Clipping threshold of the global gradient norm.
    """

    #: Tells the training step that no DeepSpeed bookkeeping is needed around the forward.
    is_deepspeed = False

    def __init__(self, model, optimizer, scheduler_factory, *, max_grad_norm: float):
        self.module = model
        self.optimizer = self.basic_optimizer = optimizer
        self.lr_scheduler = scheduler_factory(optimizer)
        self.max_grad_norm = max_grad_norm
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._norm: float | None = None

    def backward(self, loss, scale_wrt_gas: bool = False) -> None:
        """Accumulate the gradient of ``loss`` (the caller scales it; no 1/grad_accum here)."""
        loss.backward()

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """No-op: :meth:`step` is only called at the boundary."""

    def zero_optimization_stage(self) -> int:
        return 0

    def get_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_global_grad_norm(self) -> float | None:
        """The gradient norm before clipping, of the last :meth:`step`."""
        return self._norm

    def step(self) -> None:
        """Clip the global gradient norm, update, advance the schedule, clear the gradients."""
        import torch

        self._norm = float(torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm,
                                                          foreach=True))
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save_checkpoint(self, save_dir: str, tag: str,
                        exclude_frozen_parameters: bool = False) -> None:
        """Write the (trainable, with ``exclude_frozen_parameters``) weights, the optimizer and
        the schedule under ``save_dir/tag``."""
        import torch

        directory = Path(save_dir) / tag
        directory.mkdir(parents=True, exist_ok=True)
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        state = {k: v for k, v in self.module.state_dict().items()
                 if not exclude_frozen_parameters or k in names}
        torch.save(state, directory / MODEL_FILE)
        torch.save({"optimizer": self.optimizer.state_dict(),
                    "lr_scheduler": self.lr_scheduler.state_dict()}, directory / OPTIM_FILE)

    def load_checkpoint(self, load_dir: str, tag: str, load_module_strict: bool = True,
                        load_optimizer_states: bool = True,
                        load_lr_scheduler_states: bool = True) -> tuple[str | None, Any]:
        """Restore what :meth:`save_checkpoint` wrote; ``(None, None)`` when it is absent
        (as DeepSpeed answers)."""
        import torch

        directory = Path(load_dir) / tag
        if not (directory / MODEL_FILE).is_file():
            return None, None
        state = torch.load(directory / MODEL_FILE, weights_only=True)
        self.module.load_state_dict(state, strict=load_module_strict)
        optim = torch.load(directory / OPTIM_FILE, weights_only=False)
        if load_optimizer_states:
            self.optimizer.load_state_dict(optim["optimizer"])
        if load_lr_scheduler_states:
            self.lr_scheduler.load_state_dict(optim["lr_scheduler"])
        return str(directory), {}
