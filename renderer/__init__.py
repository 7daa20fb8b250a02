"""Brand-consistency batch campaign renderer: plan, render, verify.

The public API is small; the CLI (``campaign``) is built on it.
"""

__version__ = "0.1.0"
