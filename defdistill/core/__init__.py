"""Plumbing every layer may use: atomic file writes, the progress protocol, the runtime (device,
threads, seeds) and torchrun sessions. Knows nothing of models, data or attacks.
"""
