# Sourced by scripts/test and scripts/reliability: puts uv/uvx on PATH. When uvx is not
# on PATH, uv is installed from PyPI into a virtualenv under target/ (once), so a fresh
# machine with Python 3 and pip passes.
if ! command -v uvx >/dev/null 2>&1; then
  if [ ! -x target/uv-venv/bin/uvx ]; then
    echo "uv is missing: installing it into target/uv-venv (once)" >&2
    rm -rf target/uv-venv
    python3 -m venv target/uv-venv
    target/uv-venv/bin/pip install --quiet --disable-pip-version-check uv
  fi
  export PATH="$PWD/target/uv-venv/bin:$PATH"
fi
