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
# allocator_may_return_null: a test asks for terabytes and expects a MemoryError, which
# ASAN would otherwise turn into an abort
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
# test_cnn.py and test_cnn_reliability.py: the CNN block kernels against their reference,
# random conv/pool shapes (hypothesis) and whole CNN fits through every compiled path;
# test_threads.py: the kernels' OpenMP paths (stripes, partial sums) on 2 and 3 threads
# test_low_memory.py: the low-memory kernels, which carve per-thread work arrays out of
# one allocation
LD_PRELOAD="$asan" "$venv/bin/pytest" -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_narrow.py tests/test_properties.py tests/test_conv.py \
    tests/test_agreement.py \
    tests/test_gradients.py tests/test_closed_forms.py tests/test_cnn.py \
    tests/test_cnn_reliability.py tests/test_threads.py tests/test_low_memory.py
echo "AddressSanitizer: no memory errors in the kernel tests"
