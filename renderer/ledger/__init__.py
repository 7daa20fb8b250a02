"""The SQLite ledger: migrations, typed records (their columns declared once), the store
and its queries by table group, gate decisions, locking and recovery.
"""
