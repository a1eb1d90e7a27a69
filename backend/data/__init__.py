"""Datasets: local text files (``text``) and synthetic long-context tasks (``synthetic``). Torch-free."""

from backend.data.synthetic import Sample, make_grid, make_sample, niah_grid, passkey_grid, token_counter
from backend.data.text import DatasetError, Doc, fingerprint, load_text_dataset, read_docs, sample_docs

__all__ = [
    "DatasetError", "Doc", "Sample", "fingerprint", "load_text_dataset", "make_grid", "make_sample",
    "niah_grid", "passkey_grid", "read_docs", "sample_docs", "token_counter",
]
