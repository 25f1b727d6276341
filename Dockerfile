# The image cluster/rayservice.yaml names (chatapp:0.1.0): Ray's own image with ChatApp
# installed, so the RayService's head and workers import deployments.app:build_app.
#
#   docker build -t chatapp:0.1.0 .
FROM rayproject/ray:2.60.0-py311

# PostgreSQL 17 client tools for `chatapp backup` / `restore` (cluster/backup-cronjob.yaml):
# PGDG's packages, pg_dump must be at least the server's major version (17 dumps 17 and older).
USER root
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends curl ca-certificates gnupg \
    && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
       | gpg --dearmor -o /usr/share/keyrings/pgdg.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt $(. /etc/os-release && echo $VERSION_CODENAME)-pgdg main" \
       > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-client-17 \
    && rm -rf /var/lib/apt/lists/*
USER ray

WORKDIR /home/ray/chatapp
# llama-cpp-python builds from source: the same CPU flags as the Makefile (no AMX kernels)
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
COPY --chown=ray:users pyproject.toml README.md serve_config.yaml ./
COPY --chown=ray:users chatapp ./chatapp
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users actors ./actors
COPY --chown=ray:users pipelines ./pipelines
COPY --chown=ray:users docs ./docs
# torch from its CPU index (PyPI's default build is the multi-GB CUDA one)
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .

ENV RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
