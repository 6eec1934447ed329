#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine: system packages, then .venv with pinned torch.
# Every step checks before it acts, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the real Fashion-MNIST, a single-node SLURM cluster for the integration tests,
# and Chromium for looking at the report headlessly.
APT_PACKAGES=(dataset-fashion-mnist slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python environment: torch/torchvision pinned exactly (pip takes them from the local wheel store).
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.dimr-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing dimr and its pinned dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
