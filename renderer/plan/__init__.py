"""Validated points become variants: the spec and its id (``variant_spec``), the plan and its
batches (``variants``), the pipeline calls that render what is pending (``jobs``), the output
folder's one owner (``output_folder``), estimates.
"""
