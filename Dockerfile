# The image cluster/rayservice.yaml names (chatapp:0.1.0): Ray's own image with ChatApp
# installed, so the RayService's head and workers import deployments.app:build_app.
#
#   docker build -t chatapp:0.1.0 .
FROM rayproject/ray:2.60.0-py311

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
