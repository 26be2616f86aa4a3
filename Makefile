# tfsmooth — the README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo_out
SHIPPED := benchmarks/results
# name:folder of the shipped full-data ResNet-20s that `make demo` certifies side by side.
SHIPPED_MODELS := gaussian:full_gaussian_sigma0.25 smoothadv:full_smoothadv_pgd_sigma0.25 \
    consistency:full_consistency_sigma0.25 macer:full_macer_sigma0.25 adre:full_adre_sigma0.25
SHIPPED_TSVS := $(foreach pair,$(SHIPPED_MODELS),$(DEMO)/shipped_$(firstword $(subst :, ,$(pair))).tsv)
SHARED_CIFAR := $(abspath ../shared/data/cifar-10-batches-bin)
# Tests use the real CIFAR-10 files from ../shared when present (CI sets TFSMOOTH_DATA_DIR itself).
ifeq ($(origin TFSMOOTH_DATA_DIR), undefined)
ifneq ($(wildcard $(SHARED_CIFAR)/test_batch.bin),)
export TFSMOOTH_DATA_DIR := $(SHARED_CIFAR)
endif
endif

.PHONY: demo test install install-test clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet .

# tensorflow-serving-api pins tensorflow to its own minor version: install the release matching the installed
# tensorflow, without letting pip touch tensorflow (its other requirements, grpcio and protobuf, come with it).
install-test: $(BIN)/python
	$(BIN)/pip install --quiet ".[test]"
	$(BIN)/pip install --quiet --no-deps "tensorflow-serving-api==$$($(BIN)/python -c 'import tensorflow as tf; print(tf.__version__)')"

# The main job: Gaussian-augmentation training of a CIFAR ResNet-20 (sigma = 0.25) on the embedded
# real CIFAR-10 sample, CERTIFY on 100 embedded test images (n = 10,000), table and plot; then the five shipped
# full-data models (Gaussian, SmoothAdv, consistency, MACER, ADRE) certified on the same images with n = 1,000
# (radii up to 0.25 * Phi^-1(0.001^(1/1000)) = 0.615).
demo: install
	$(BIN)/tfsmooth train --dataset cifar10_sample --arch cifar_resnet20 --sigma 0.25 \
	    --epochs 15 --batch 128 --lr 0.1 --lr-step 10 --weight-decay 1e-4 --outdir $(DEMO)/gaussian_sigma0.25
	$(BIN)/tfsmooth certify $(DEMO)/gaussian_sigma0.25/base_model.keras --dataset cifar10_sample --sigma 0.25 \
	    --n0 100 --n 10000 --alpha 0.001 --batch 1000 --skip 10 --out $(DEMO)/certify_sigma0.25.tsv
	$(BIN)/tfsmooth analyze $(DEMO)/certify_sigma0.25.tsv --radii 0,0.25,0.5,0.75,1.0 --format markdown \
	    --plot $(DEMO)/certified_accuracy.png
	@echo "plot: $(DEMO)/certified_accuracy.png"
	@echo "== The five shipped ResNet-20s (full CIFAR-10, same ~30 min CPU budget), n = 1,000 on the same images =="
	@for pair in $(SHIPPED_MODELS); do name=$${pair%%:*}; dir=$${pair#*:}; \
	    echo "$(BIN)/tfsmooth certify $(SHIPPED)/$$dir/base_model.keras ... --out $(DEMO)/shipped_$$name.tsv"; \
	    $(BIN)/tfsmooth certify $(SHIPPED)/$$dir/base_model.keras --dataset cifar10_sample --sigma 0.25 \
	        --n0 100 --n 1000 --alpha 0.001 --batch 1000 --skip 10 --out $(DEMO)/shipped_$$name.tsv > /dev/null || exit 1; \
	 done
	$(BIN)/tfsmooth analyze $(SHIPPED_TSVS) --radii 0,0.25,0.5 --format markdown --plot $(DEMO)/shipped_models.png
	@echo "plot: $(DEMO)/shipped_models.png"

# The whole test suite against the installed package (run from tests/ so the source tree is not shadowing it).
# install-test installs saved_model_cli (with tensorflow) and tensorflow-serving-api: their tests must run here,
# so TFSMOOTH_REQUIRE_SERVING_TOOLS=1 turns their "not installed" skip into a failure (a bare pytest still skips).
test: export TFSMOOTH_REQUIRE_SERVING_TOOLS := 1
test: install-test
	$(BIN)/pytest tests -q

clean-demo:
	rm -rf $(DEMO)
