# bids_pscore BIDS-App: docker run -v /data:/data:ro -v /out:/out bids_pscore /data /out participant
#
# Build arguments, for sites without Docker Hub or without the PyTorch index:
#   BASE_IMAGE       the Python 3.11 image to start from
#   TORCH_INDEX_URL  the extra index that holds torch's CPU build; empty: none (pip's own
#                    configuration, e.g. a local wheel folder, or a CUDA build from the default index)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# the release being built: the build context holds no git history to read it from
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="bids_pscore" \
      org.opencontainers.image.description="P-score neurodegeneration biomarker from T1w MRI, as a BIDS-App" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/bids-apps/bids_pscore" \
      org.opencontainers.image.licenses="MIT AND CC-BY-SA-3.0"

# Everything the app writes at run time goes to /tmp (HOME, matplotlib's and deno's caches), so
# the image runs as any user and with a read-only root file system (--read-only --tmpfs /tmp).
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NIPYPE_NO_ET=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    DENO_DIR=/tmp/deno \
    BIDS_PSCORE_CONTAINER=docker

WORKDIR /opt/bids_pscore
COPY requirements.lock pyproject.toml README.md LICENSE ./
COPY bids_pscore ./bids_pscore

# Every dependency at the version pinned in requirements.lock (tools/lock writes it; torch is its
# CPU build), the BIDS validator among them; then the project itself, which adds none.
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --no-deps --requirement requirements.lock \
    && SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}" pip install --no-cache-dir --no-deps . \
    && pip check \
    && bids_pscore --version \
    && useradd --system --uid 1000 --home-dir /tmp --shell /usr/sbin/nologin bids

USER 1000
WORKDIR /tmp
ENTRYPOINT ["bids_pscore"]
