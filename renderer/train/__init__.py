"""The LoRA trainer: its job, the families' models, data and cache, the step loop and its
output folder, the engine, its report and command.
"""
