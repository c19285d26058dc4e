# bids_pscore BIDS-App: docker run -v /data:/data:ro -v /out:/out bids_pscore /data /out participant
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NIPYPE_NO_ET=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_PSCORE_CONTAINER=docker

WORKDIR /opt/bids_pscore
COPY pyproject.toml README.md LICENSE ./
COPY bids_pscore ./bids_pscore

# Installed as README.md says (torch 2.13.0, then the project), with the BIDS validator that checks
# the inputs (the project's "validator" extra, pinned here for hadolint); the extra index holds the CPU build of torch. For a CUDA image, drop the extra
# index (see README.md, "GPU").
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu "bids-validator-deno==3.0.2" "torch==2.13.0" . \
    && bids_pscore --version

WORKDIR /tmp
ENTRYPOINT ["bids_pscore"]
