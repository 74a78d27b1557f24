# terraseg image: `terraseg serve` by default; `docker run IMAGE train|predict ...` for one-off jobs.
#   docker build -t terraseg .                                    # CPU (python:3.11-slim)
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH_INDEX=cu124 -t terraseg:gpu .
#   behind a TLS-intercepting proxy: --secret id=extra_ca,src=corp-ca.pem (never stored in a layer)
#   without download.pytorch.org: --build-arg TORCH_INDEX= (torch from PyPI: the CUDA build, larger)
#   BuildKit is needed (RUN --mount): DOCKER_BUILDKIT=1 with Docker 20.10+, or buildx
ARG BASE_IMAGE=python:3.11-slim

# ---- build: wheels for the project and its pinned dependencies, Leaflet from npm ------------------
FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX=cpu
# optional dependencies: ray = predict/serve --engine ray, and the image KubeRay runs (deploy/ray); postgres = the
# driver of the MLflow tracking server compose.yaml runs from this image; "" for none
ARG EXTRAS=ray,postgres
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends npm \
    && (python3 -m venv --help >/dev/null 2>&1 || apt-get install -y --no-install-recommends python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=extra_ca,required=false \
    if [ -f /run/secrets/extra_ca ]; then npm config set cafile /run/secrets/extra_ca; fi && npm ci --omit=dev
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY src ./src
RUN --mount=type=secret,id=extra_ca,required=false \
    python3 -m venv /opt/venv && \
    if [ -f /run/secrets/extra_ca ]; then export PIP_CERT=/run/secrets/extra_ca; fi && \
    /opt/venv/bin/pip install ${TORCH_INDEX:+--extra-index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"} -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"

# ---- runtime: the venv only, a non-root user ---------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && (command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3) && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 terraseg && mkdir -p /models /data /mlartifacts /registered && chown terraseg /models /data /mlartifacts /registered
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TERRASEG_DATA=/data
USER 10001
WORKDIR /home/terraseg
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["terraseg"]
# a bundle mounted at /models/model.terraseg, or override with a models:/name@alias URI and --tracking-uri
CMD ["serve", "/models/model.terraseg", "--host", "0.0.0.0", "--port", "8000"]
