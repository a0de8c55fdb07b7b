#!/usr/bin/env bash
# Run the kernel tests against kernels built with AddressSanitizer and Cython bounds
# checks, and fail on any memory error.  Usage: bash tools/asan_kernels.sh
# (needs gcc's libasan; takes a few minutes: one extra build in a throw-away venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q ".[test]" \
    -Ccmake.define.LYSEP_SANITIZE=ON -Ccmake.define.LYSEP_CYTHON_DEBUG=ON \
    -Cbuild-dir="$(mktemp -d)"
asan="$(gcc -print-file-name=libasan.so)"
# Python itself is not instrumented and keeps memory until exit: leaks are not errors here.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
# test_cnn.py and test_cnn_reliability.py: the CNN block kernels against their reference,
# random conv/pool shapes (hypothesis) and whole CNN fits through every compiled path;
# test_threads.py: the kernels' OpenMP paths (stripes, partial sums) on 2 and 3 threads
LD_PRELOAD="$asan" "$venv/bin/pytest" -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_narrow.py tests/test_properties.py tests/test_conv.py \
    tests/test_agreement.py \
    tests/test_gradients.py tests/test_closed_forms.py tests/test_cnn.py \
    tests/test_cnn_reliability.py tests/test_threads.py
echo "AddressSanitizer: no memory errors in the kernel tests"
