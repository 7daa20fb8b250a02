"""The diffusers seam: pipelines, LoRAs, controls and refine passes, and the environment
fingerprint.
"""
