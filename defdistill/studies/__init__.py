"""Studies: compositions of training and evaluation steps into one answer (the demo, sweeps,
the membership-inference privacy study, compression measurements).
"""
