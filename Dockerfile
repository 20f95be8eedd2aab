# One image for rpc_server, rest_facade and sandbox_worker (the command picks the role).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rpc_server ./rpc_server
COPY rest_facade ./rest_facade
COPY sandbox_worker ./sandbox_worker
COPY sql ./sql
RUN pip install --no-compile . \
    && useradd --system --uid 10001 --home-dir /var/lib/flexdb --create-home flexdb
# Never root: the sandbox worker's limits rely on running unprivileged.
USER flexdb
ENV FLEXDB_DATA_DIR=/var/lib/flexdb FLEXDB_MIGRATIONS_DIR=/app/sql
EXPOSE 5000 5001 8000
CMD ["flexdb", "serve"]
