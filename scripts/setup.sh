# Installs what building and testing uns-kafka needs on a fresh Debian
# machine that has only rustup, Java and Maven. Sourced by demo.sh and
# test.sh; every step is skipped when its tool is already there.

# Runs a command up to three times, 10 s apart: a package registry that
# drops one connection should not fail a whole CI run.
retry() {
  local n
  for n in 1 2 3; do
    "$@" && return 0
    [ "$n" -lt 3 ] && { echo "==> failed, retrying in 10 s: $*" >&2; sleep 10; }
  done
  return 1
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> apt-get install ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  retry $sudo apt-get update -qq
  # `env` inside sudo: sudo would drop the variable.
  retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# librdkafka is built from source by rdkafka-sys (C toolchain, OpenSSL,
# zlib); aws-lc-sys (rustls) may want cmake.
ensure_build_deps() {
  apt_install build-essential pkg-config libssl-dev zlib1g-dev cmake perl
}

ensure_rust_target() {
  if ! rustup target list --installed | grep -qx "$1"; then
    echo "==> rustup target add $1" >&2
    retry rustup target add "$1"
  fi
}

ensure_wasm_target() {
  ensure_rust_target wasm32-wasip2
}

ensure_cargo_component() {
  if ! cargo component --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-component (takes a while, once)" >&2
    # Pinned: a new release may want a newer Rust or build differently.
    retry cargo install cargo-component --version 0.21.1 --locked
  fi
  # cargo component build targets wasm32-wasip1 and would otherwise add it
  # unannounced.
  ensure_rust_target wasm32-wasip1
}
