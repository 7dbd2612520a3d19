"""Evaluation and comparison runs: held-out rewards, win rates, KL, Best-of-n, method tables.

* :mod:`lire_ray.evaluate.summary`: raw samples to report numbers (pure functions);
* :mod:`lire_ray.evaluate.runner`: sampling and scoring held-out prompts with the role actors;
* :mod:`lire_ray.evaluate.policy_eval`: one checkpoint against its base policy
  (``jobs/evaluate.py``);
* :mod:`lire_ray.evaluate.compare`: every loss on one pool over seeds, and the Evolve x Iterate
  grid (``jobs/compare.py``);
* :mod:`lire_ray.evaluate.plots`: the paper's evaluation figures as PNG files.

Nothing here imports Ray at module level.
"""
