"""One variant's way from rendered pixels to written files: finishing, scoring, metadata,
encoding.
"""
