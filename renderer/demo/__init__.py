"""The tiny deterministic demo models."""
