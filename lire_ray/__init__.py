"""lire-ray: listwise reward enhancement (LIRE) as a Ray actor system.

The package is pure logic: it never imports ``ray`` at module level. Ray actors live in the
top-level ``actors`` package and entry scripts in ``jobs/``.
"""

__version__ = "0.1.0"
