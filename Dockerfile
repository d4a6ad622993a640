# flowgate's image: the gateway (`flowgate serve`) and the bulk workers (`flowgate worker`).
#
#   docker build -t flowgate .                                          # CPU
#   docker build -t flowgate:cuda --build-arg TORCH_VARIANT=cu128 .     # CUDA (the wheel bundles the CUDA
#                                                                       # runtime; the host needs the driver
#                                                                       # and the NVIDIA container toolkit)
# A different base image (e.g. one with your CA certificates) goes in BASE_IMAGE; it needs Python 3.11.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu: torch's CPU wheel (a plain `pip install torch` on Linux pulls a multi-GB CUDA build);
# cu126, cu128, ...: the CUDA wheel of that version.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}

# gcc: the CPU kernels are compiled on first use for the CPU they run on (-march=native), and Triton
# compiles its launchers on GPU hosts. curl: the healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev curl \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/flowgate
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY engine engine
COPY kernels kernels
COPY workers workers
RUN pip install .

RUN useradd --create-home --uid 10001 flowgate \
 && mkdir -p /var/lib/flowgate \
 && chown flowgate /var/lib/flowgate
USER flowgate
# Models, the CPU kernel cache and bulk-job files live here; compose mounts a volume over it (a named
# volume starts as a copy of what the image has here, so the bundled model pulled below comes along).
ENV FLOWGATE_HOME=/var/lib/flowgate \
    FLOWGATE_CACHE=/var/lib/flowgate/cache \
    FLOWGATE_HOST=0.0.0.0 \
    FLOWGATE_PORT=8000
RUN flowgate models pull smollm2-135m

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${FLOWGATE_PORT}/ready" >/dev/null || exit 1
CMD ["flowgate", "serve"]
