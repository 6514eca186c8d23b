"""What lives on disk: runs (safetensors weights plus a JSON sidecar), per-epoch training
checkpoints, the JSON records of every measured row, and the CSV/Markdown tables rebuilt from them.
"""
