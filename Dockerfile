# syntax=docker/dockerfile:1
# Two images from one build context:
#   docker build --target service -t contextmesh/service:0.1.0 .
#     gateway, syncsvc, mergesvc, notifysvc: no torch, so they start fast and stay small.
#   docker build --target trainer -t contextmesh/trainer:0.1.0 .
#     trainsvc and searchsvc: the `train` extra (torch, sentence-transformers, base model).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY meshkit/ meshkit/
COPY meshctl/ meshctl/
COPY gateway/ gateway/
COPY syncsvc/ syncsvc/
COPY mergesvc/ mergesvc/
COPY notifysvc/ notifysvc/
COPY searchsvc/ searchsvc/
COPY trainsvc/ trainsvc/

# Each image's dependencies go into a virtualenv that the runtime stage copies whole, so
# no compiler, pip cache or source tree ends up in what runs.
FROM source AS build-service
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /src

FROM source AS build-trainer
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "/src[train]"

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric user, so that Kubernetes can check runAsNonRoot (k8s/ runs as 10001).
RUN groupadd --system --gid 10001 contextmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin contextmesh
# The root filesystem is read-only in the cluster: no bytecode writes at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The descriptor image Envoy transcodes with; the gateway pod copies it to its sidecar.
COPY gen/contextmesh/contextmesh.binpb /opt/contextmesh/contextmesh.binpb
WORKDIR /tmp

FROM runtime AS trainer
COPY --from=build-trainer /opt/venv /opt/venv
# Models load from the installed base model and the blob store, never from a hub.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
CMD ["python", "-m", "trainsvc"]

# Last, so that a plain `docker build .` builds the service image.
FROM runtime AS service
COPY --from=build-service /opt/venv /opt/venv
USER 10001:10001
CMD ["python", "-m", "gateway"]
