# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment (pinned by constraints.txt) if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tools demo test test-slow test-gpu bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Command-line codecs that `vqcodec eval` compares against (Debian packages). Without root
# privileges this only says what is missing; eval reports missing tools and skips them.
tools:
	@if command -v opusenc >/dev/null && command -v c2enc >/dev/null; then true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq opus-tools codec2 >/dev/null || (apt-get update -qq && apt-get install -y -qq opus-tools codec2 >/dev/null) || echo "could not install opus-tools/codec2: eval skips those baselines"; \
	else echo "opus-tools/codec2 missing (apt-get install opus-tools codec2): eval skips those baselines"; fi

# The main job: a real photo and a real speech clip through the bundled models at two rates each
# (sizes, real rates, quality). The samples come from scripts/get_data.sh (Debian packages, PyPI).
demo: $(STAMP)
	test -d data/eval/images || PYTHON=$(PY) scripts/get_data.sh data
	$(PY) scripts/demo.py --data data --out demo

test: $(STAMP) tools
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

bench: $(STAMP)
	$(PY) bench/quantizers.py --json bench/results/quantizers.json
	$(PY) bench/fuzz_bitstream.py --cases 10000
	$(PY) bench/long_audio.py --minutes 60 --json bench/results/long_audio_cpu.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
