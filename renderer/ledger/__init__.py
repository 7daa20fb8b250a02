"""The SQLite ledger: migrations, typed records (the render row's columns declared once,
``columns`` deriving its INSERT and reader), the store (``store``) and its queries by table
group (``runs``, ``renders``, ``recipes``, ``gatings``, ``reviews``, ``deliveries``,
``trainings``), a run's commits (``run_recorder``), gate decisions, locking and recovery.
"""
