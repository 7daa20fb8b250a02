"""The other commands' tasks, a module each (with its parts beside it): reproduce, show
(``lookup``), review, deliver, gate, pin, provenance.
"""
