"""The zoo: small hybrids trained on a local, licence-clean corpus (see zoo/build.py).

A top-level room: it imports ``backend``, ``models`` and ``kernels``; nothing there imports it (the app,
the runner and the CLI only read its exports under ``precomputed/``).

Data side: ``corpus`` (stdlib documents, splits, synthetic retrieval documents, JSONL), ``packages``
(source of permissively licensed installed packages), ``tokenizer`` (byte-level BPE, HF-style save,
token-stream packing), ``build`` (deterministic rebuild).
Models: ``variants`` (the seven), ``data`` + ``synthetic_rows`` (training rows, fresh synthetic rows
every epoch), ``train`` / ``train_all`` (trainer, equal-data runs of all variants), ``continued``
(training on from an earlier zoo root), ``checkpoint``, ``formation`` (retrieval-head formation during
training). Traces: ``precompute`` (trace store via the runner), ``report``, ``package`` (archives for
the device round trip).
CLI: ``python -m zoo build-data | pack | variants | train | train-all | precompute | report |
package`` (scripts/gpu_zoo.sh runs the GPU pipeline).
"""
