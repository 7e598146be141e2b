# Two commands: `make eval` (the main job) and `make test` (the whole suite).
# Both install the system library open3d needs, create .venv when it is missing and install
# everything the project needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU/CUDA torch pinned to the pair that installs beside open_clip's torchvision.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.pointcalip-installed
EVAL_CONFIG ?= modelnet40_zeroshot

.PHONY: test eval install system-deps benchmark clean

# open3d's import needs libusb-1.0 (Debian package libusb-1.0-0). As root it is installed;
# otherwise we stop at once and print the command to run.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing libusb-1.0-0 (needed by open3d)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0; \
	  else \
	    echo "error: open3d needs the system library libusb-1.0, which is missing. Run:" >&2; \
	    echo "    sudo apt-get update && sudo apt-get install -y libusb-1.0-0" >&2; \
	    echo "then run make again." >&2; exit 1; \
	  fi; \
	fi

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: system-deps $(STAMP)

test: install
	$(PY) -m pytest -q

eval: install
	test -d data/modelnet40_ply_hdf5_2048 || $(VENV)/bin/pointcalip download modelnet40 --root data
	$(VENV)/bin/pointcalip eval --config $(EVAL_CONFIG)

benchmark: install
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
