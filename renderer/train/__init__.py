"""The LoRA trainer: its job, the families' models, data and cache, the engine, its report and
command.
"""
