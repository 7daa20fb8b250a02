"""The other commands' tasks: reproduce, show, review, deliver, pin, provenance."""
