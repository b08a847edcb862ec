# make run     : set up .venv if needed, then train the lecture's Inception net on verified MNIST
# make test    : set up .venv if needed, then run the test suite
# make bench   : the speed benchmarks (docs/speed.md)
# make weights : retrain the shipped pretrained weights (src/cnnlab/weights/) with the best recipe, bit for bit
#                on the same kind of CPU; make weights-check compares instead of writing (docs/accuracy.md)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cnnlab-installed

.PHONY: run test bench weights weights-check clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,tensorboard]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m cnnlab train --model inception

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run

weights: $(STAMP)
	$(PY) -m cnnlab.pretrained_build

weights-check: $(STAMP)
	$(PY) -m cnnlab.pretrained_build --check

clean-venv:
	rm -rf $(VENV)
