# HybridScope dashboard, run the way a Hugging Face Docker Space runs it:
# non-root user with uid 1000, port 7860, the bundled precomputed/ store baked in, CPU-only torch,
# hosted mode (HYBRIDSCOPE_HOSTED=1: smaller runs, one at a time per browser tab, no file: data).
# New runs go to /data/hybridscope/store when /data (a Space's persistent storage) is writable, else to
# the user's cache directory (lost on restart). tests/test_dockerfile.py checks this file's contract.
#   docker build -t hybridscope . && docker run --rm -p 7860:7860 hybridscope
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 user

# Dependencies first (cached layer). torch comes from the CPU wheel index; requirements.txt then
# finds torch==2.13.0 satisfied (2.13.0+cpu) and never pulls a CUDA build.
COPY --chown=user requirements.txt /tmp/requirements.txt
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -r /tmp/requirements.txt

USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HYBRIDSCOPE_PRECOMPUTED=/home/user/app/precomputed \
    HYBRIDSCOPE_HOSTED=1 \
    OMP_NUM_THREADS=2 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /home/user/app

COPY --chown=user pyproject.toml ./
COPY --chown=user kernels ./kernels
COPY --chown=user models ./models
COPY --chown=user backend ./backend
COPY --chown=user app ./app
COPY --chown=user .streamlit ./.streamlit
COPY --chown=user precomputed ./precomputed

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "app/main.py", \
     "--server.port", "7860", "--server.address", "0.0.0.0", "--server.headless", "true", \
     "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
