"""Reading the files a user writes: YAML with the line of every key, the sandboxed templates,
the file formats (pydantic; a module per kind) and their errors, the refine steps' registry.
"""
