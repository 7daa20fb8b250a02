"""What model files are, from their headers alone: single-file layouts, adapter and config
compatibility.
"""
