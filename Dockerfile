# The forecasting service: `docker build -t episodic-koopman .` then
# `docker run -p 8000:8000 -v ek-data:/data -e EPISODIC_KOOPMAN_API_KEY=... episodic-koopman`
FROM python:3.11-slim

# Small matrices: one BLAS/OpenMP thread is much faster than several (see threads.py).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    EPISODIC_KOOPMAN_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY service ./service
# The postgres extra lets EPISODIC_KOOPMAN_DATABASE name a PostgreSQL server; EXTRAS adds
# more (docker-compose.yml builds with EXTRAS=ray for `serve --engine ray` and `ray start`).
ARG EXTRAS=
RUN pip install ".[service,postgres${EXTRAS:+,${EXTRAS}}]"

# An unprivileged user owns only the data volume.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
USER app
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["episodic-koopman", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8000", "--data-dir", "/data"]
