# Two entry points for a fresh machine: `make demo` and `make test`.
# Both make a virtual environment in .venv that may reuse packages already on the
# machine (--system-site-packages), then install what is missing.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip install -q --disable-pip-version-check
# Test workers (pytest-xdist): CI has 2 cores; each worker may load TensorFlow (~1.5 GB).
JOBS    ?= 2

.PHONY: demo test install-device install-demo install-dev system-tools clean

$(VPY):
	$(PY) -m venv --system-site-packages $(VENV)

# The lists are pyproject.toml's, as requirements*.txt for pip -r (a test checks they agree).
install-device: $(VPY)
	$(PIP) -r requirements.txt

install-demo: $(VPY)
	$(PIP) -r requirements-demo.txt

install-dev: $(VPY)
	$(PIP) -r requirements-test.txt
# face_recognition: the bench's --compare peer; --no-deps as its dlib is dlib-bin's (no compiler)
	$(PIP) --no-deps face-recognition==1.3.0
# torch: test-only, proves the rebuilt MobileFaceNet equals its PyTorch source; its tests
# skip where it cannot be installed (the converter and the device never import it)
	$(PIP) torch==2.13.0 || echo "note: torch not installed: the PyTorch parity tests will skip" >&2

demo: install-demo
	$(VPY) -m edge run

test: install-dev system-tools
	$(VPY) -m ruff check edge converter tests
	$(VPY) -m pytest -q -n $(JOBS)

# The systemd unit and script tests need systemd-analyze and shellcheck, the MQTT tests a
# mosquitto broker: installed with apt-get when missing (root or passwordless sudo);
# without them those tests skip.
system-tools:
	@command -v systemd-analyze >/dev/null && command -v shellcheck >/dev/null && \
	  { command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } || { \
	  S=""; [ "$$(id -u)" -eq 0 ] || S="sudo -n"; \
	  { command -v apt-get >/dev/null && $$S apt-get update -qq && \
	    $$S apt-get install -y -qq --no-install-recommends systemd shellcheck mosquitto >/dev/null; } || \
	  echo "note: systemd-analyze/shellcheck/mosquitto not installed: their tests will skip" >&2; }

clean:
	rm -rf $(VENV) .pytest_cache
