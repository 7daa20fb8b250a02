"""The render service (``campaign serve``): a persistent job queue with an HTTP API and
runner processes that keep models loaded between jobs, and its thin client (README,
"Render service")."""
