"""Validated points become variants: the spec and its id, batches, the output folder's layout,
estimates.
"""
