# `make demo` and `make test` work on a fresh machine: they create .venv when missing and
# install geoseg with its dev extras into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geoseg-installed
MODEL ?= models/buildings.safetensors
DEMO_SCENE := data/demo/23429155_15_uint8_clipped.tif
DEMO_LABELS := data/demo/23429155_15.gpkg

.PHONY: demo test lint install bench gpu-check gpu-wheels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision pinned first: the versions this machine kind has on disk.
# Strict editable mode: the packages are links under build/, on sys.path like an installed
# package (a folder named geoseg in the working directory cannot shadow them as a namespace
# package), and only geoseg and geoseg_pipelines are importable, never the repo's root.
# New modules need a reinstall: the stamp depends on the package folders (a file added or
# removed changes the folder's time). setuptools' notice that strict mode is on is not shown.
$(STAMP): pyproject.toml geoseg $(wildcard geoseg/*/) pipelines | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	PYTHONWARNINGS="ignore:Editable installation" \
	  $(BIN)/pip install --quiet --config-settings editable_mode=strict -e ".[dev,slurm]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/geoseg predict $(DEMO_SCENE) --model $(MODEL) --out out/demo --overwrite --vectorize --probabilities
	$(BIN)/geoseg evaluate out/demo/23429155_15_uint8_clipped/classes.tif --truth $(DEMO_LABELS) --attribute class --map 1=building --json out/demo/metrics.json

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

# static checks CI runs before the tests: ruff (style, bugs, type hints on every function)
# and mypy over the library and the pipelines
lint: $(STAMP)
	$(BIN)/ruff check geoseg pipelines tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_predict
	$(BIN)/python -m benchmarks.bench_batch
	$(BIN)/python -m benchmarks.bench_vectorize --size 16384
	$(BIN)/python -m benchmarks.bench_vectorized_predict
	$(BIN)/python -m benchmarks.bench_memory_tree
	$(BIN)/python -m benchmarks.bench_small_job

# The GPU check (benchmarks/gpu_check.py): on this machine's device in CPU mode; on a GPU
# machine without network, `make gpu-wheels` here first and carry .whl/ with the tree
# (benchmarks/gpu_check.sh installs them there; about 45 MB, under the 64 MiB a run carries).
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check --device cpu --quick

GPU_WHEELS := rasterio==1.4.4 affine attrs certifi click-plugins cligj pyparsing shapely \
  segmentation-models-pytorch pystac python-dateutil dask distributed tornado tblib zict \
  partd locket urllib3 six
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
	  $(GPU_WHEELS)
	du -sh .whl

clean:
	rm -rf out .pytest_cache
