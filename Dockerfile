# optline: `optline serve`, `optline worker` and `optline migrate` from one image.
#   podman build -t optline .        (or docker build)
#   podman run --rm optline --help
# compose.yaml runs it with PostgreSQL; docs/deployment.md explains the settings.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed, unprivileged uid and gid, so a host folder mounted on var/ can be chowned to it.
RUN groupadd --system --gid 10001 optline \
 && useradd --system --uid 10001 --gid optline --home-dir /app --no-create-home --shell /usr/sbin/nologin optline

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
# Editable on purpose: optline finds alembic/, alembic.ini, keywords.yaml and var/ beside
# its package (/app), which a plain wheel install into site-packages would not have.
# No dev extras: the image carries only what serving needs.
RUN python -m venv /opt/venv \
 && pip install -q "pip==25.3" \
 && pip install -q -c constraints.txt -e . \
 && rm -rf /app/build
COPY alembic.ini keywords.yaml ./
COPY alembic ./alembic
# var/ is the one place the process writes: the webhook spool, the SQLite database (when no
# OPTLINE_DATABASE_URL is given) and the secret key file (when no OPTLINE_SECRET_KEY is given).
RUN mkdir -p /app/var && chown optline:optline /app/var
VOLUME ["/app/var"]

USER optline
EXPOSE 8000
# /healthz answers when the process does; an `optline worker` container has no HTTP port,
# so compose.yaml turns this check off for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["optline"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
