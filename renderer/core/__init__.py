"""The foundation every stage uses: errors, hashing, atomic writes, progress, terminal-safe
text, the model families' table.
"""
