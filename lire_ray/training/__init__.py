"""Policy training: DeepSpeed engines on Ray Train workers, fed whole prompt groups from pools.

- :mod:`~lire_ray.training.engine`: DeepSpeed config, cosine schedule with warmup, LoRA.
- :mod:`~lire_ray.training.step`: one listwise optimizer step with any registry loss.
- :mod:`~lire_ray.training.data`: a worker's shard, streamed in epoch 1 and cached after.
- :mod:`~lire_ray.training.checkpoint`: resumable training state and the Hugging Face output.
- :mod:`~lire_ray.training.worker`: the per-worker loop Ray Train runs.
- :mod:`~lire_ray.training.result`: what a run returns to its driver.

The Ray side (``TorchTrainer``, scaling, failure handling) is :class:`lire_ray.runtime.trainer.TrainerGroup`.
"""
