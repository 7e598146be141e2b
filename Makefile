# Two commands: `make eval` (the main job) and `make test` (the whole suite).
# Both create .venv when it is missing and install everything the project needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU/CUDA torch pinned to the pair that installs beside open_clip's torchvision.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.pointcalip-installed

.PHONY: test eval install benchmark clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

eval: $(STAMP)
	test -d data/modelnet40_ply_hdf5_2048 || $(VENV)/bin/pointcalip download modelnet40 --root data
	$(VENV)/bin/pointcalip eval --config configs/modelnet40_zeroshot.yaml

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
