# ModuleMesh images, one Dockerfile, three targets:
#
#   slim         (default) the package without onnxruntime: `modulemesh operator`, `sidecar`,
#                `router`, `run`, `validate`, `status`. CMD: operator.
#   runtime      the package with onnxruntime (CPU): `modulemesh runtime`. CMD: runtime.
#                Both runtime targets ship the example models (`modulemesh models build`) in
#                /opt/modulemesh/examples/models, where the operator resolves a module's
#                relative model path, so the graphs in examples/ run unchanged in a cluster.
#   runtime-gpu  the package with onnxruntime-gpu on a CUDA + cuDNN runtime base: the runtime
#                picks the CUDA provider when a GPU is present, else falls back to CPU.
#
# Base images are build args, so a mirror or a locally made base can stand in for Docker Hub /
# NGC (hack/images/build does that with a debootstrapped Debian). Both bases only need python3
# (3.11+) with the venv module; the CUDA stage installs them with apt when the base lacks them.
# Everything is installed into a virtualenv at /opt/modulemesh (Debian's python refuses pip
# system installs, PEP 668); the final stages copy that venv, with pip and setuptools removed,
# onto a clean base: no compilers, no pip in the venv, no caches, uid/gid 65532, ENTRYPOINT
# modulemesh.
# Build args for the build stages only (never in a shipped image): PIP_CERT, the CA bundle pip
# trusts (mount the host's over it behind a TLS-inspecting proxy), and PIP_FIND_LINKS +
# PIP_NO_INDEX=1 to install from a mounted wheelhouse instead of PyPI (hack/images/build does).
#
#   docker build --target runtime -t modulemesh-runtime .
#   buildah bud --target runtime-gpu --build-arg CUDA_BASE=... -t modulemesh-runtime-gpu .

ARG PYTHON_BASE=python:3.11-slim
ARG CUDA_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build stages (not shipped)

# The package as a wheel (pure Python), built once and installed into every flavour.
FROM ${PYTHON_BASE} AS wheel
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modulemesh ./modulemesh
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
    && ls /wheels/modulemesh-*.whl

# A venv with the package's dependencies only, read from pyproject.toml: with a layer cache
# (docker build, buildah --layers) this slow step is reused while only the source changes.
FROM ${PYTHON_BASE} AS deps
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -m venv /opt/modulemesh \
    && python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"]))' \
         /tmp/pyproject.toml > /tmp/requirements.txt \
    && /opt/modulemesh/bin/pip install --quiet -r /tmp/requirements.txt

# Finish a venv: install the wheel without touching dependencies, then drop pip/setuptools.
FROM deps AS venv-slim
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0
COPY --from=wheel /wheels /wheels
RUN /opt/modulemesh/bin/pip install --quiet --no-deps /wheels/modulemesh-*.whl \
    && /opt/modulemesh/bin/pip uninstall --quiet --yes pip setuptools \
    && rm -rf /tmp/*.txt /tmp/pyproject.toml /root/.cache

FROM deps AS venv-cpu
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0
COPY --from=wheel /wheels /wheels
RUN python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["optional-dependencies"]["cpu"]))' \
         /tmp/pyproject.toml > /tmp/requirements-cpu.txt \
    && /opt/modulemesh/bin/pip install --quiet -r /tmp/requirements-cpu.txt \
    && /opt/modulemesh/bin/pip install --quiet --no-deps /wheels/modulemesh-*.whl \
    && /opt/modulemesh/bin/modulemesh models build /opt/modulemesh/examples/models \
    && /opt/modulemesh/bin/pip uninstall --quiet --yes pip setuptools \
    && rm -rf /tmp/*.txt /tmp/pyproject.toml /root/.cache

# The CUDA base with python3 + venv (nvidia/cuda images ship none) and the service user.
FROM ${CUDA_BASE} AS cuda-python
RUN if ! python3 -c 'import ensurepip, tomllib, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    && groupadd --gid 65532 modulemesh \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin modulemesh

FROM cuda-python AS venv-gpu
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml /tmp/pyproject.toml
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/modulemesh \
    && python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["gpu"]))' \
         /tmp/pyproject.toml > /tmp/requirements.txt \
    && /opt/modulemesh/bin/pip install --quiet -r /tmp/requirements.txt \
    && /opt/modulemesh/bin/pip install --quiet --no-deps /wheels/modulemesh-*.whl \
    && /opt/modulemesh/bin/modulemesh models build /opt/modulemesh/examples/models \
    && /opt/modulemesh/bin/pip uninstall --quiet --yes pip setuptools \
    && rm -rf /tmp/*.txt /tmp/pyproject.toml /root/.cache

# The Python base with the service user (final stages start here).
FROM ${PYTHON_BASE} AS python-user
RUN groupadd --gid 65532 modulemesh \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin modulemesh

# ---------------------------------------------------------------- shipped targets

FROM cuda-python AS runtime-gpu
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="modulemesh-runtime-gpu" \
      org.opencontainers.image.description="ModuleMesh module runtime: ONNX Runtime with the CUDA provider (CPU fallback), Open Inference Protocol v2" \
      org.opencontainers.image.source="https://github.com/modulemesh/modulemesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV PATH=/opt/modulemesh/bin:$PATH VIRTUAL_ENV=/opt/modulemesh \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    MODULEMESH_RUNTIME_CACHE_DIR=/tmp/modulemesh/models
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modulemesh"]
CMD ["runtime"]
# Last, so every metadata step above stays cached and cheap (vfs copies per step).
COPY --from=venv-gpu /opt/modulemesh /opt/modulemesh

FROM python-user AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="modulemesh-runtime" \
      org.opencontainers.image.description="ModuleMesh module runtime: ONNX Runtime (CPU), Open Inference Protocol v2" \
      org.opencontainers.image.source="https://github.com/modulemesh/modulemesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV PATH=/opt/modulemesh/bin:$PATH VIRTUAL_ENV=/opt/modulemesh \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    MODULEMESH_RUNTIME_CACHE_DIR=/tmp/modulemesh/models
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modulemesh"]
CMD ["runtime"]
# Last, so every metadata step above stays cached and cheap (vfs copies per step).
COPY --from=venv-cpu /opt/modulemesh /opt/modulemesh

# Default target (last): operator, sidecar and router.
FROM python-user AS slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="modulemesh" \
      org.opencontainers.image.description="ModuleMesh operator, sidecar and router (no onnxruntime)" \
      org.opencontainers.image.source="https://github.com/modulemesh/modulemesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV PATH=/opt/modulemesh/bin:$PATH VIRTUAL_ENV=/opt/modulemesh \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modulemesh"]
CMD ["operator"]
# Last, so every metadata step above stays cached and cheap (vfs copies per step).
COPY --from=venv-slim /opt/modulemesh /opt/modulemesh
