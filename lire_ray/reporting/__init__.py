"""Reports from plain numbers (core: no Ray, no model): :mod:`~lire_ray.reporting.report`
writes ``report.md`` and ``metrics.json``, :mod:`~lire_ray.reporting.plots` draws the paper's
figures."""
