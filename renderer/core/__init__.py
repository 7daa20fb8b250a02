"""The foundation every stage uses: errors, hashing, the JSON value type, atomic writes,
progress, terminal-safe text, the model families' table.
"""
