"""The `campaign` command line."""
