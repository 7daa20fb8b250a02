"""`campaign render`: execution of a plan by the local or Ray executors, adoption of existing
images.
"""
