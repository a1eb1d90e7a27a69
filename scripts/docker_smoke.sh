#!/usr/bin/env bash
# Build the Docker image, start it on 127.0.0.1, wait for /_stcore/health, stop it. Skips (exit 0) when no
# Docker engine answers (`docker info`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "docker_smoke: no Docker engine here; skipped (tests/test_dockerfile.py checks the contract)"
  exit 0
fi
tag="hybridscope-ci:$$"
name="hybridscope-ci-$$"
docker build -t "$tag" .
docker run -d --rm --name "$name" -p 127.0.0.1::7860 "$tag" >/dev/null
trap 'docker stop "$name" >/dev/null 2>&1 || true; docker rmi "$tag" >/dev/null 2>&1 || true' EXIT
port=$(docker port "$name" 7860/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 90); do
  if curl -fsS "http://127.0.0.1:${port}/_stcore/health" | grep -q ok; then
    test "$(docker exec "$name" id -u)" = 1000
    echo "docker_smoke: image healthy on 127.0.0.1:${port} (uid 1000)"
    exit 0
  fi
  sleep 2
done
echo "docker_smoke: the image did not become healthy" >&2
docker logs "$name" | tail -50 >&2
exit 1
