"""The zoo: small hybrids trained on a local, licence-clean corpus (see backend/zoo/build.py).

Data side: ``corpus`` (stdlib documents, splits, synthetic retrieval documents), ``tokenizer``
(byte-level BPE, HF-style save, token-stream packing), ``build`` (deterministic rebuild).
CLI: ``python -m backend.zoo build-data --out DIR`` and ``python -m backend.zoo pack ...``.
"""
