#!/usr/bin/env bash
# What the chat page's browser test (tests/chat_page_browser.rs) needs, installed only where
# it is missing, so that a second run does nothing:
# - Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver), with
#   apt-get (as root: CI and the developers' machines run as root);
# - selenium, pinned, in a project-local venv: ${CARGO_TARGET_DIR:-target}/browser-venv.
# Prints the venv's python on its last line; scripts/test.sh passes it to the test as
# QWENC_BROWSER_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned; 4.52.0 asks for a certifi (>=2026.10.23) newer than the package index had when this was set.
SELENIUM="selenium==4.51.0"
venv="${CARGO_TARGET_DIR:-target}/browser-venv"
py=python3

pkgs=()
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || pkgs+=(chromium-driver)
# Debian's python3 makes venvs only with python3-venv (ensurepip).
if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
  py=/usr/bin/python3
  "$py" -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "browser test: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi

if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  echo "browser test: $SELENIUM into $venv" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$SELENIUM" >&2
fi
echo "browser test: $(/usr/bin/chromium --version 2>/dev/null | head -1), $("$venv/bin/python" -c 'import selenium; print("selenium", selenium.__version__)')" >&2
cd "$venv" && echo "$PWD/bin/python"
