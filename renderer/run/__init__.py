"""`campaign render`: the task (``execute``), what the output folder and its ledger say before
a run (``folder_state``), the local and Ray executors, adoption of existing images.
"""
