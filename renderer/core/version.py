"""The software's version: every image's metadata names it (``Version`` in A1111's text,
``xmp:CreatorTool``), and reproduce compares it."""

__version__ = "0.1.0"
