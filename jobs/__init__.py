"""Entry scripts (``python jobs/<name>.py``); a package only so that tools tell ``jobs/bench.py``
from the ``bench`` package."""
