"""Evaluation: the attack registry (Foolbox attacks and our own), the metrics every table
reports, and the gradient-masking diagnosis. Never imports the training layer.
"""
