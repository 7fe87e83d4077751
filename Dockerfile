# glamhpc runtime image: GLAM learners (FLAN-T5 + PPO on BabyAI-Text) on a CUDA PyTorch base.
#
#   glamhpc build                      # prints and runs the exact `docker build` below
#   docker build --build-arg BASE_IMAGE=<site image with torch> -t glamhpc:0.1.0 .
#
# The base image is a build argument because HPC sites bring their own (matching their drivers,
# InfiniBand stack, mirrors). The default is the upstream CUDA runtime image of the torch that
# constraints.txt pins; containers/install.sh keeps whatever torch build the base ships.
# Apptainer users convert this image (containers/glamhpc.def, Bootstrap: docker-daemon) or build
# the .def from the same base with the same steps. See docs/CONTAINERS.md.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG VERSION=0.1.0
# REVISION (the commit) is declared at the end: every RUN after an ARG sees it, so a new commit
# would otherwise miss Docker's cache for the dependency layers and rebuild them all.
ARG SOURCE=unknown
ARG BAKED_MODEL=none

LABEL org.opencontainers.image.title="glamhpc" \
      org.opencontainers.image.description="GLAM learners (LLM policies tuned online with PPO) on BabyAI-Text" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.glamhpc.baked-model="${BAKED_MODEL}"

# HF_HOME is the model cache: jobs bind a shared, prefetched cache over /models (or use weights
# baked in with --bake-model). Compute nodes usually have no internet, hence offline by default;
# `docker run -e HF_HUB_OFFLINE=0` re-enables downloads on a machine that has a network.
# MPLCONFIGDIR: matplotlib needs a writable config folder and the image (a SIF) is read-only.
ENV HF_HOME=/models \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/glamhpc/src

# Dependencies first, in their own layer: editing glamhpc's code does not reinstall them.
COPY pyproject.toml constraints.txt ./
COPY containers/install.sh containers/install.sh
RUN sh containers/install.sh deps /opt/glamhpc/src

COPY README.md ./
COPY glamhpc/ glamhpc/
RUN sh containers/install.sh project /opt/glamhpc/src

# Non-root by default. uid 10001 rather than 1000, which several bases already use; on a shared
# filesystem `glamhpc submit --container` runs as the submitting user (`docker run --user`).
RUN groupadd --gid 10001 glam \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash glam \
    && install -d -o 10001 -g 10001 /models /workspace

# Empty unless `glamhpc build --bake-model NAME` staged a model there for this build.
COPY --chown=10001:10001 containers/bake/ /models/

# What this image holds, readable from inside it (the trainer tags its MLflow run with it): the
# proof that a job ran in this build. Last, so that a new commit rebuilds only these layers.
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}"
RUN printf 'glamhpc %s %s\n' "${VERSION}" "${REVISION}" > /etc/glamhpc-image

USER 10001:10001
WORKDIR /workspace
ENTRYPOINT ["glamhpc"]
CMD ["--help"]
