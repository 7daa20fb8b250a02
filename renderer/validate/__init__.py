"""The one layer where input is checked: every file kind, every referenced file, every variant
of the matrix.
"""
