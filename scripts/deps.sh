#!/bin/sh
# scripts/deps.sh [build|test|demo] - make sure the Debian packages sightline needs
# are installed. As root, installs what is missing (apt-get); otherwise
# prints the exact apt-get line and exits 1.
#   build: compilers, CMake and the libraries libsightline links
#   test:  build + what the tests use (Debian's python3 with numpy as the
#          reference for format and parity tests: numpy, torch, PIL, regex,
#          faiss; headless Chromium to render the `query --html` page, about
#          2 s in tests/reference/html_check.py)
#   demo:  build + npm, tar and openssl (scripts/fetch-demo-data)
set -eu
what=${1:-build}

pkgs="build-essential cmake pkg-config git
libfaiss-dev librocksdb-dev libcurl4-openssl-dev libturbojpeg0-dev libpng-dev libwebp-dev
libopenblas-openmp-dev libjansson-dev libutf8proc-dev libssl-dev"
case "$what" in
    build) ;;
    demo) # npm may come from another package (NodeSource's nodejs): any npm will do
        pkgs="$pkgs tar openssl"
        command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm" ;;
    test) pkgs="$pkgs python3 python3-numpy python3-torch python3-pil python3-regex python3-faiss chromium" ;;
    *) echo "usage: scripts/deps.sh [build|test|demo]" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "sightline needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
