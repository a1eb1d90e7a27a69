"""HybridScope dashboard (Streamlit). Never imports torch/transformers: it only reads the trace store
and asks the backend (a child process or an HTTP server) for runs."""
