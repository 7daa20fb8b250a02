"""The one layer where input is checked: every file kind, every referenced file, every variant
of the matrix.

Each file kind has its module (``recipe`` with its ``refine`` block and ``model_files``,
``brand``, ``campaign`` with ``campaign_matrix``, ``points`` and ``delivery``, ``training``),
``any_kind`` tells a file's kind by its keys, ``file_refs`` resolves the files a document
names and ``file_probes`` reads what is wrong with one; ``sizes`` and ``matrix`` are the
arithmetic the plan shares. The results are ``inputs``' and ``training_spec``'s frozen values.
"""
