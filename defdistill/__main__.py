"""`python -m defdistill ...`, and `torchrun --nproc_per_node N -m defdistill train-teacher ...`."""

from .cli import run

run()
