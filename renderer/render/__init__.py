"""The diffusers seam: the renderer (``diffusers_renderer``) and its parts: the models
(``pipelines``), the LoRA stacks (``loras``), the call arguments (``call``) and controls
(``controls``), the base and refine passes (``passes``), how the models run (``options``), and
the environment fingerprint (``environment``).
"""
