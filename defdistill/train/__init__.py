"""Training: recipes (optimiser, schedule), the training loop, teachers at a temperature,
distillation and its variants' losses. Never imports the evaluation layer.
"""
