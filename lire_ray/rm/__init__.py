"""Reward models trained here: Bradley-Terry scalar heads on preference pairs from pools.

- :mod:`~lire_ray.rm.pairs`: pairs formed within each pool row (labels or a reward's scores).
- :mod:`~lire_ray.rm.data`: the training and held-out pairs of a run, checked before Ray starts.
- :mod:`~lire_ray.rm.worker`: the trainer worker (the policy worker with a sequence classifier
  and the Bradley-Terry step, :func:`lire_ray.losses.bradley_terry_loss`).
- :mod:`~lire_ray.rm.evaluate`: held-out accuracy, calibration, agreement, ``report.md``.
- :mod:`~lire_ray.rm.chitchat`: real human preference pairs from the chit-chat conversations.

The job is ``jobs/train_rm.py``; the trained folder is a ``kind: hf`` reward model.
"""
