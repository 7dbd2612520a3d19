"""The orchestration layer's self-enhancement loop (with ``lire_ray/studies/``, above the runtime).

- :mod:`~lire_ray.loop.algorithm`: Algorithm 1 (Evolve x Iterate) over a :class:`Chain`.
- :mod:`~lire_ray.loop.pool_sources`: the three ways of building the pool D_e of a step.
- :mod:`~lire_ray.loop.evaluator`: held-out evaluation of the served policy.
- :mod:`~lire_ray.loop.self_enhance`: the main job's run, from recipe to report.
- :mod:`~lire_ray.loop.run_report`: that run's report.
- :mod:`~lire_ray.loop.rundir` and :mod:`~lire_ray.loop.drift`: the run directory, what a
  resume may trust in it and which recipe changes it may continue with.
"""
