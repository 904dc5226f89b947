# syntax=docker/dockerfile:1
# The operator image: `vector-migration operator`. Built by .github/workflows/e2e.yaml and for releases.
# The base is pinned to an exact Python patch release on a named Debian; bump it deliberately.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: install the package and its dependencies into a virtual environment ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Every dependency ships manylinux wheels (asyncpg included), so no compiler is needed even here.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: --no-compile . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the interpreter, the virtual environment, nothing else ---------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="vector-migration-operator" \
      org.opencontainers.image.description="Declarative, lossless pgvector to RuVector migrations for PostgreSQL" \
      org.opencontainers.image.source="https://github.com/ruvector/vector-migration-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["vector-migration"]
CMD ["operator", "--all-namespaces"]
