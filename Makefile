# The README's two commands: `make run` and `make test`. Both work on a fresh machine:
# they create the virtual environment, install the project and build llama-cpp-python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama.cpp for any x86-64 CPU with AVX2 (portable; the AMX kernels crash on some VMs),
# without the multimodal library (mtmd: images and audio), which ChatApp's text models
# never load: a shorter compile on a machine whose pip cache has no wheel yet.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
# The vLLM environment (.ci/vllm-env.sh); CI keeps one outside its fresh clone.
VLLM_VENV ?= .venv-vllm
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

.PHONY: install run test test-long lint bench eval web clean chaos cluster fuzz

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so nothing reaches for a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/chatapp run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chatapp

# The whole suite in its short form: long forms (tests marked `long`, the whole schema
# fuzz) are skipped or shortened; `make test-long` runs them too.
test: lint
	$(PYTEST)
	# the vLLM engine on vLLM's CPU build, in its own environment (it pins torch and fastapi)
	VLLM_VENV=$(VLLM_VENV) .ci/vllm-env.sh
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/vllm

# `make test` with the long forms (`--long`): every cluster scenario and the whole fuzz.
test-long: lint
	$(PYTEST) --long
	VLLM_VENV=$(VLLM_VENV) .ci/vllm-env.sh
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/vllm

# The web page's built files are committed; rebuild them after changing chatapp/web/src.
web:
	cd chatapp/web && npm ci && npm run build

# Faults under load on a 3-node Ray cluster on this machine (a few minutes; PostgreSQL and
# Redis are the run's own, stopped and started): per fault the failed requests and how they
# failed, time to recover, acknowledged messages lost and duplicated (both 0).
chaos: install
	$(BIN)/python -m tests.cluster.scenario --faults node,shard,ingress,router,llm,postgres,redis

# Every scenario of tests/cluster (a few minutes): CI's short form (redis and node faults on
# a 3-node cluster), autoscaling under a load step, tracing across processes, and the
# long form: Ray's autoscaler adding a node under load and removing it after.
cluster: install
	$(PYTEST) --long tests/cluster

# The whole schema fuzz (two to three minutes): 40 examples per operation, mode and path,
# about 4,100 requests; CI's short form sends 10 (about 1,000).
fuzz: install
	$(PYTEST) --long tests/integration/test_schema_fuzz.py

bench: install
	$(BIN)/python bench/chat_turn.py
	$(BIN)/python bench/users.py --quick
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/gateway.py --quick

eval: install
	$(BIN)/python -m pipelines.evaluate_retrieval --sources README.md docs --dataset pipelines/data/docs-qa

clean:
	rm -rf $(VENV) var
