"""Evaluation metrics of the paper (sec. 4.3-4.5, A.8), as pure functions over numbers.

- :mod:`~lire_ray.metrics.stats`: the estimators (mean, win rate, KL, negative flips, Best-of-n,
  Student-t confidence intervals) and text diversity (distinct-n).
- :mod:`~lire_ray.metrics.summary`: raw evaluation samples to the numbers a report shows.
- :mod:`~lire_ray.metrics.grad_health`: LIRE's gradient health over training steps (one-hot Q,
  eq. 7 weights) and the run's one-time warning.
"""
