"""The `campaign` command line: ``main`` (entry point, errors, exit codes), ``parser`` (every
command's options, the shared ones declared once) and a handler module per command group.
"""
