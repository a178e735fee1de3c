# riskgate as a container: `docker build -t riskgate .`, then see docs/production.md.
# Every step below is run outside Docker by tests/test_dockerfile.py (make test), and the
# file is linted with hadolint there.

# --- build: riskgate's wheel and a wheel of every dependency ------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
# Binary wheels only: python:3.11-slim has no compiler, and none is needed.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --only-binary=:all: --wheel-dir /src/wheels .

# --- final: the wheels installed, no build tools, not root --------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin riskgate
COPY --from=build /src/wheels /tmp/wheels
# No index: exactly the versions the build stage resolved, so there is nothing to pin.
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels riskgate \
    && rm -rf /tmp/wheels
# The bundled rules and a configuration that reads the environment; mount your own
# over /etc/riskgate/riskgate.yaml (and rules/) to change them.
COPY rules/ /etc/riskgate/rules/
COPY examples/container.yaml /etc/riskgate/riskgate.yaml
ENV PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["riskgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--config", "/etc/riskgate/riskgate.yaml"]
