"""The SQLite ledger: migrations, typed records, the store, gate decisions, locking and
recovery.
"""
