"""The `campaign` command line.
"""
