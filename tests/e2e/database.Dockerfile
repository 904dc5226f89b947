# The e2e database: PostgreSQL with pgvector, plus the RuVector STAND-IN extensions (pgvector's C
# code under RuVector's SQL names; see operator/vector_migration/standin.py). With RUVECTOR_IMAGE
# set, the suite uses that image (real RuVector) instead and never builds this one.
ARG PGVECTOR_IMAGE=pgvector/pgvector:0.8.1-pg17
FROM ${PGVECTOR_IMAGE}
COPY standin/ /usr/share/postgresql/17/extension/
LABEL org.opencontainers.image.description="e2e test database: pgvector + RuVector stand-in extensions (not RuVector)"
