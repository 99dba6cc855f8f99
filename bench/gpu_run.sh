#!/usr/bin/env bash
# bench/gpu_run.sh - the whole GPU session in one script: build with CUDA,
# the cuda tests (plain and under compute-sanitizer), encoder speed beside
# PyTorch (ViT-B/32 and ViT-B/16 images, text; BF16; MFU), GPU-vs-CPU
# parity, exact search, and `index build --device cuda` over a generated
# JPEG corpus next to the pure encoder rate. Every step is time-limited and
# the script carries on past failures; the figures end up in one summary.
#
# usage (from anywhere; it runs in the repository root):
#   bash bench/gpu_run.sh
# environment (all optional):
#   OUT=./gpu-out        results: summary.txt, run.log (this transcript),
#                        logs.tar.gz (every step's full log) - 3 files
#   WORK=/tmp/sightline-gpu   scratch: models, JPEGs, indices, logs
#   BUILD=build-gpu      build directory (kept: a rerun rebuilds incrementally)
#   BUDGET=540           seconds for the whole script; each step's limit is cut
#                        to what is left (the device tool allows 600 a command)
#   STEPS="deps build ctest bench parity index train trainbench search sanitize"
#                        the steps to run
#   N_JPEGS=20000        corpus size for the index step
#   QUICK=1              tiny settings everywhere (a dry run of the script)
#   INDEX_DEVICE=cuda    --device of the index step (cpu: try the step without a GPU)
#   JOBS=$(nproc)        build parallelism
#   PYTHON=...           the Python with PyTorch (else the first of python3,
#                        /usr/bin/python3, /usr/local/bin/python3,
#                        /opt/conda/bin/python whose torch sees CUDA)
#   SL_DEPS=/opt/sl-deps where the dependency bundle is unpacked (below)
#
# Dependency bundle, for a machine without our Debian packages and without
# network (a CUDA/PyTorch image): on the Debian bookworm development machine,
# as root, `scripts/gpu-bundle` writes .gpu/prefix.tar.xz (~16 MiB: headers,
# shared libraries, libfaiss.a, .pc and CMake files of the build's libraries
# and of their run-time library closure, less glibc, libgcc_s, libstdc++ and
# libgomp, which the machine's gcc brings) and .gpu/MANIFEST.txt. .gpu/ is
# git-ignored: carry it, e.g. the device tool's run with carry [".gpu"] and
# the command `bash bench/gpu_run.sh`. When .gpu/prefix.tar.xz exists, this
# script unpacks it to $SL_DEPS (once per bundle; with xz, else Python's
# tarfile; $WORK/sl-deps where /opt is not writable) and configures with
# CMAKE_PREFIX_PATH, faiss_DIR, PKG_CONFIG_PATH (the bundle's pkg-config
# when the machine has none) pointing there, and links every executable with
# an RPATH (DT_RPATH: it covers the libraries' own dependencies too) to the
# bundle's library directories, so neither the tests nor the benches need
# LD_LIBRARY_PATH and the machine's Python/PyTorch keep their own libraries.
# The machine needs glibc >= 2.34 and libstdc++ with GLIBCXX_3.4.30 (gcc 12
# or newer; .gpu/MANIFEST.txt has the figures); the "deps" step's Debian
# package check then reports packages missing: expected, the bundle has them.
#
# Planned wall time on one H100 with 16 cores (limits in brackets): deps 1 s,
# configure + build ~20-60 s [120 + 300] (the same targets take 17 s on 2
# cores of the development machine), ctest -L cuda ~20 s [150],
# models ~15 s [90], encoder B/32 ~50 s [170], B/16 ~35 s [130], parity
# ~15 s [90 + 2 x 60], JPEGs ~6 s [120], index build x 2 ~30 s [2 x 150],
# trainbench (bench_train, ViT-B/32 BF16 + F32 beside PyTorch) ~90-120 s
# [60 + 45 + 120 + 75], search ~25 s [120], compute-sanitizer: what is
# left, up to 120 s a test.
# Typical total ~5-8 minutes; BUDGET keeps it under 9 (the summary and the
# archive are written even when a step overruns). STEPS splits a session in
# two calls if needed (e.g. STEPS="build sanitize": an incremental build
# when build-gpu is still there).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-./gpu-out} # relative paths: to the directory it is started from
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1
WORK=${WORK:-/tmp/sightline-gpu}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) || exit 1
BUILD=${BUILD:-$ROOT/build-gpu}
mkdir -p "$BUILD" && BUILD=$(cd "$BUILD" && pwd) || exit 1
cd "$ROOT" || exit 1
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-deps build ctest bench parity index train trainbench search sanitize}
N_JPEGS=${N_JPEGS:-20000}
QUICK=${QUICK:-0}
INDEX_DEVICE=${INDEX_DEVICE:-cuda}
JOBS=${JOBS:-$(nproc)}
RESERVE=15 # seconds kept for the summary and the archive
LOGS=$WORK/logs
SUMMARY=$WORK/summary.txt
T0=$(date +%s)

has_step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
elapsed() { echo $(($(date +%s) - T0)); }
section() { printf '\n==================== %s  [t=%ss] ====================\n' "$*" "$(elapsed)"; }
summ() { printf '%s\n' "$*" >>"$SUMMARY"; }

# run LOG LIMIT CMD...: CMD with its output in LOG, killed (with its
# children) after LIMIT seconds, or fewer when the budget is short. Prints a
# status line; returns CMD's status (124 on timeout, 125 when skipped).
run() {
    local log=$1 limit=$2
    shift 2
    local left=$((BUDGET - $(elapsed) - RESERVE))
    if ((left < 10)); then
        echo "  SKIPPED: time budget spent ($(elapsed) s of $BUDGET)" | tee "$log"
        return 125
    fi
    ((limit > left)) && limit=$left
    local t
    t=$(date +%s.%N)
    timeout -k 5 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local secs
    secs=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    local what="rc=$rc"
    ((rc == 124 || rc == 137)) && what="TIMED OUT after ${limit}s"
    ((rc == 77)) && what="skipped (77: no usable CUDA device)"
    echo "  [$(basename "$log")] $what in ${secs} s (limit ${limit} s)"
    LAST_SECS=$secs
    return $rc
}

# Last lines of a log written by this run, indented (for failures).
tail_log() { [ "$1" -nt "$WORK/.start" ] && tail -n "${2:-25}" "$1" | sed 's/^/  | /'; }

# The dependency bundle of scripts/gpu-bundle (see the header): unpack
# .gpu/prefix.tar.xz to $SL_DEPS unless there already, point pkg-config and
# CMake at it (DEPS_CMAKE: the configure options). Returns 1 on failure.
SL_DEPS=${SL_DEPS:-/opt/sl-deps}
DEPS_CMAKE=()
use_bundle() {
    local tarball=$ROOT/.gpu/prefix.tar.xz stamp
    if ! mkdir -p "$SL_DEPS" 2>/dev/null || [ ! -w "$SL_DEPS" ]; then
        echo "  $SL_DEPS is not writable: using $WORK/sl-deps"
        SL_DEPS=$WORK/sl-deps
    fi
    stamp="$(cksum <"$tarball") $SL_DEPS"
    if [ "$(cat "$SL_DEPS/.bundle" 2>/dev/null)" = "$stamp" ]; then
        echo "  already unpacked in $SL_DEPS"
    else
        if [ -n "$(ls -A "$SL_DEPS" 2>/dev/null)" ] && [ ! -f "$SL_DEPS/.bundle" ]; then
            echo "  $SL_DEPS is not empty and holds no bundle: not overwriting it (set SL_DEPS)"
            return 1
        fi
        rm -rf "$SL_DEPS" && mkdir -p "$SL_DEPS" || return 1
        local py
        if command -v xz >/dev/null 2>&1; then
            tar -xJf "$tarball" -C "$SL_DEPS" || return 1
        elif py=$(command -v python3 || command -v python); then
            echo "  (no xz: unpacking with $py's tarfile)"
            "$py" -c 'import sys, tarfile
kw = {"filter": "tar"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **kw)' "$tarball" "$SL_DEPS" || return 1
        else
            echo "  neither xz nor python3 here to unpack $tarball"
            return 1
        fi
        # the paths in the .pc and CMake files are /opt/sl-deps's
        if [ "$SL_DEPS" != /opt/sl-deps ]; then
            grep -rlF /opt/sl-deps "$SL_DEPS/usr" --include='*.pc' --include='*.cmake' |
                xargs -r sed -i "s#/opt/sl-deps#$SL_DEPS#g" || return 1
        fi
        echo "$stamp" >"$SL_DEPS/.bundle"
        echo "  unpacked to $SL_DEPS: $(du -sh "$SL_DEPS" | cut -f1)"
    fi
    local L=$SL_DEPS/usr/lib/x86_64-linux-gnu
    [ -f "$L/cmake/faiss/faiss-config.cmake" ] || { echo "  $L: no FAISS CMake files: not a bundle?"; return 1; }
    # glibc: the bundle's libraries were built for Debian bookworm
    local need have
    need=$(sed -n 's/^GLIBC_REQUIRED=//p' "$ROOT/.gpu/MANIFEST.txt" 2>/dev/null)
    have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
    echo "  glibc here ${have:-?}; the bundle needs ${need:-?} or newer"
    if [ -n "$need" ] && [ -n "$have" ] &&
        [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
        echo "  WARNING: glibc $have is older than $need: the bundle's libraries will not load"
    fi
    export PKG_CONFIG_PATH=$L/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    DEPS_CMAKE=(-DCMAKE_PREFIX_PATH="$SL_DEPS/usr" -Dfaiss_DIR="$L/cmake/faiss"
        -DCMAKE_INCLUDE_PATH="$SL_DEPS/usr/include" -DCMAKE_LIBRARY_PATH="$L"
        -DCMAKE_BUILD_RPATH="$L;$L/openblas-openmp"
        -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath-link,$L:$L/openblas-openmp")
    if ! command -v pkg-config >/dev/null 2>&1; then
        echo "  no pkg-config here: the bundle's (pkgconf)"
        DEPS_CMAKE+=(-DPKG_CONFIG_EXECUTABLE="$SL_DEPS/usr/bin/pkg-config")
    fi
    return 0
}

main() {
    mkdir -p "$WORK" "$LOGS"
    touch "$WORK/.start"
    sleep 1 # logs written from now on are newer than .start
    rm -f "$SUMMARY" # logs of steps not run this time stay (a split session keeps both halves)
    summ "sightline GPU session - $(date -u '+%Y-%m-%d %H:%M:%S UTC') - $(hostname)"
    summ "steps: $STEPS; QUICK=$QUICK; N_JPEGS=$N_JPEGS; budget ${BUDGET} s"

    section "0. machine"
    local gpu="none"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
            --format=csv 2>&1 | tee "$LOGS/nvidia-smi.txt"
        gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
        [ -n "$gpu" ] || gpu="none (nvidia-smi failed)"
    else
        echo "nvidia-smi: not found (no NVIDIA driver here)"
    fi
    local nvcc=/usr/local/cuda/bin/nvcc
    command -v nvcc >/dev/null 2>&1 && nvcc=$(command -v nvcc)
    local cudav
    cudav=$("$nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo "no nvcc")
    echo "CPU: $(nproc) cores; memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}'); CUDA: $cudav"
    echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git')" \
        "$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l | awk '$1 > 0 {print "(+" $1 " changed files)"}')"
    summ "GPU: $gpu; CPU cores: $(nproc); CUDA: $cudav"

    # Python: one whose torch sees CUDA runs the reference (PYREF); any with
    # torch writes the random models (PYMAKE).
    PYREF="" PYMAKE=""
    local c seen=" "
    for c in ${PYTHON:-} python3 /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python python; do
        c=$(command -v "$c" 2>/dev/null) || continue
        # (by path, not by real path: a venv's python links to the system's)
        case "$seen" in *" $c "*) continue ;; esac
        seen="$seen$c "
        local v
        v=$(timeout 60 "$c" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>/dev/null | tail -n1)
        [ -n "$v" ] || continue
        echo "python: $c: torch $v"
        [ -n "$PYMAKE" ] || PYMAKE=$c
        if [ -z "$PYREF" ] && [ "${v##* }" = "True" ]; then PYREF=$c; fi
    done
    [ -n "$PYMAKE" ] || echo "python: no interpreter with torch: no random models, no PyTorch reference"
    [ -n "$PYREF" ] || echo "python: no torch that sees CUDA: the PyTorch reference is skipped"
    summ "python with torch: ${PYMAKE:-none}; with torch + CUDA (reference): ${PYREF:-none}"

    local q=$QUICK
    local BIN=$BUILD

    # ------------------------------------------------------------------
    if has_step deps; then
        section "deps: Debian packages (scripts/deps.sh, checked only: no internet here)"
        # As root deps.sh would apt-get install; run it as nobody, where it
        # only lists what is missing.
        local asnobody=""
        if [ "$(id -u)" -ne 0 ]; then
            asnobody=" "
        elif command -v setpriv >/dev/null 2>&1; then
            asnobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
        elif command -v runuser >/dev/null 2>&1; then
            asnobody="runuser -u nobody --"
        fi
        if [ -n "$asnobody" ]; then
            for what in build test; do
                # shellcheck disable=SC2086
                if run "$LOGS/deps_$what.log" 20 $asnobody sh -s "$what" <"$ROOT/scripts/deps.sh"; then
                    echo "  $what: every package installed"
                    summ "deps $what: all installed"
                else
                    local miss
                    miss=$(grep -o 'install -y.*' "$LOGS/deps_$what.log" | sed 's/install -y//')
                    echo "  $what: missing:${miss:- (see log)}"
                    summ "deps $what: MISSING${miss:- ?}"
                fi
            done
        else
            echo "  cannot drop root (no setpriv/runuser): not checked"
        fi
    fi

    # ------------------------------------------------------------------
    # Before configure (and for binaries of an earlier build): the bundle.
    if [ -f "$ROOT/.gpu/prefix.tar.xz" ]; then
        section "deps bundle: .gpu/prefix.tar.xz -> $SL_DEPS (scripts/gpu-bundle)"
        if use_bundle; then
            summ "deps bundle: $SL_DEPS; glibc $(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
        else
            summ "deps bundle: FAILED to unpack or use (the build looks for system packages)"
            DEPS_CMAKE=()
        fi
    fi

    # ------------------------------------------------------------------
    local built=0
    if has_step build; then
        section "a. configure + build (Release, SL_CUDA=ON, SL_WERROR=ON) in $BUILD"
        # every test labelled cuda (ctest -L cuda), whether or not it exists yet in this tree
        local targets=(sightline-cli bench_encoder bench_gpu_search bench_gpu_jpegs test_cuda test_cuda_search
            test_cuda_encoder test_cuda_train_ops test_dist)
        [ -f tests/test_cuda_train_step.c ] && targets+=(test_cuda_train_step)
        local werror=ON
        if run "$LOGS/configure.log" 120 cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            -DSL_CUDA=ON -DSL_WERROR=ON ${DEPS_CMAKE[@]+"${DEPS_CMAKE[@]}"} &&
            run "$LOGS/build.log" 300 cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"; then
            built=1
        else
            tail_log "$LOGS/configure.log" 10
            tail_log "$LOGS/build.log" 30
            echo "  the -Werror build failed; trying again with SL_WERROR=OFF to get the figures"
            werror=OFF
            if run "$LOGS/configure_nowerror.log" 120 cmake -S "$ROOT" -B "$BUILD" \
                -DCMAKE_BUILD_TYPE=Release -DSL_CUDA=ON -DSL_WERROR=OFF ${DEPS_CMAKE[@]+"${DEPS_CMAKE[@]}"} &&
                run "$LOGS/build_nowerror.log" 300 cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"; then
                built=1
            else
                tail_log "$LOGS/build_nowerror.log" 30
            fi
        fi
        grep -E 'CUDA \(SL_CUDA|NCCL|warnings as errors' "$LOGS/configure.log" 2>/dev/null | sed 's/^/  /'
        if ((${#DEPS_CMAKE[@]})) && [ -f "$BUILD/CMakeCache.txt" ]; then
            local found outside
            found=$(grep -E '^(pkgcfg_lib_[A-Za-z0-9_]+|faiss_DIR):' "$BUILD/CMakeCache.txt")
            outside=$(echo "$found" | grep -v "=$SL_DEPS/" | sed 's/^/    /')
            if [ -n "$outside" ]; then
                echo "  found OUTSIDE the bundle ($SL_DEPS):"
                echo "$outside"
            elif [ -n "$found" ]; then
                echo "  from the bundle ($SL_DEPS): FAISS and the $(echo "$found" | grep -c '^pkgcfg_lib_') pkg-config libraries"
            fi
        fi
        if ((built)); then
            summ "build: OK (SL_WERROR=$werror)$([ $werror = OFF ] && echo ' - the -Werror build FAILED, see build.log')"
        else
            summ "build: FAILED (see configure*.log / build*.log)"
        fi
    elif [ -x "$BIN/bench_encoder" ] || [ -x "$BIN/bench/bench_encoder" ]; then
        built=1
    fi
    local SL=$BIN/sightline BE=$BIN/bench/bench_encoder BS=$BIN/bench/bench_gpu_search
    local BJ=$BIN/bench/bench_gpu_jpegs

    # ------------------------------------------------------------------
    if has_step ctest && ((built)); then
        section "b1. ctest -L cuda"
        (cd "$BUILD" && run "$LOGS/ctest_cuda.log" 150 ctest -L cuda --output-on-failure --timeout 120)
        grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|Skipped|Failed|\*\*\*' "$LOGS/ctest_cuda.log" | sed 's/^/  /'
        summ "ctest -L cuda: $(grep -E 'tests passed' "$LOGS/ctest_cuda.log" || echo 'no result')"
        grep -E 'Test +#[0-9]+:' "$LOGS/ctest_cuda.log" |
            sed -E 's/^ *[0-9]+\/[0-9]+ +//; s/ \.+\**/ /; s/ +/ /g; s/^/  ctest /' >>"$SUMMARY"
    fi

    # ------------------------------------------------------------------
    # Models: random ViT-B/32 and ViT-B/16 (HF layout, F32) for the
    # encoder, parity and index steps.
    local M32=$WORK/model-b32 M16=$WORK/model-b16 have_models=0
    if (has_step bench || has_step parity || has_step index) && ((built)); then
        section "models: random ViT-B/32 and ViT-B/16 (bench/encoder_ref.py make)"
        if [ -n "$PYMAKE" ]; then
            if [ -f "$M32/config.json" ] && [ -f "$M16/config.json" ]; then
                echo "  reusing $M32 and $M16"
                have_models=1
            elif run "$LOGS/models.log" 90 sh -c "'$PYMAKE' bench/encoder_ref.py make '$M32.tmp' b32 && rm -rf '$M32' && mv '$M32.tmp' '$M32' && '$PYMAKE' bench/encoder_ref.py make '$M16.tmp' b16 && rm -rf '$M16' && mv '$M16.tmp' '$M16'"; then
                have_models=1
            else
                tail_log "$LOGS/models.log"
            fi
        else
            echo "  no Python with torch: the encoder steps are skipped; parity and index use models/demo"
        fi
    fi

    # ------------------------------------------------------------------
    local enc_rate=""
    if has_step bench && ((built)) && ((have_models)); then
        section "c. encoder speed beside PyTorch (BF16, batch 256)"
        local ref="--python $PYREF"
        [ -n "$PYREF" ] || ref="--no-ref"
        local sz=""
        ((q)) && sz="--batch 8 --iters 2 --rounds 1 --warmup 1"
        local arch
        for arch in b32 b16; do
            local model=$M32 towers=both limit=170
            [ $arch = b16 ] && model=$M16 towers=image limit=130
            echo "--- ViT-B/${arch#b} ($towers) ---"
            # shellcheck disable=SC2086
            run "$LOGS/bench_encoder_$arch.log" $limit "$BE" --model "$model" --device cuda \
                --towers $towers $ref $sz
            local rc=$?
            grep -vE '^round ' "$LOGS/bench_encoder_$arch.log" | sed 's/^/  /'
            if ((rc == 0)); then
                grep '^RESULT' "$LOGS/bench_encoder_$arch.log" | awk -v arch="$arch" '{
                    for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                    printf "encoder %s %s (%s, batch %s): sightline %.1f/s = %.1f TFLOP/s, MFU %.1f%%",
                        arch, r["tower"], r["dtype"], r["batch"], r["sl_per_s"], r["sl_tflops"], 100 * r["sl_mfu"]
                    if (r["torch_gpu_per_s"] > 0)
                        printf "; PyTorch eager %.1f/s inputs on GPU (sightline %.2fx, target >= 1.2x), %.1f/s host I/O (%.2fx), MFU %.1f%%",
                            r["torch_gpu_per_s"], r["ratio_vs_torch_gpu"], r["torch_host_per_s"], r["ratio_vs_torch_host"], 100 * r["torch_mfu"]
                    printf "; GPU MB sightline %s, torch %s\n", r["sl_gpu_mb"], r["torch_gpu_mb"]
                    sub(/^RESULT /, "")
                    print "  raw: " $0
                }' >>"$SUMMARY"
            else
                summ "encoder $arch: FAILED or skipped (rc=$rc)"
            fi
        done
        [ -z "$PYREF" ] && summ "encoder: PyTorch reference NOT run (no torch with CUDA)"
    fi
    # The pure encoder rate for the index step: this run's, else an earlier run's log.
    enc_rate=$(grep '^RESULT tower=image' "$LOGS/bench_encoder_b32.log" 2>/dev/null |
        grep -o 'sl_per_s=[0-9.]*' | cut -d= -f2)

    # ------------------------------------------------------------------
    if has_step parity && ((built)); then
        section "c2. parity: GPU embeddings against the CPU path (tolerances 2e-2 BF16, 1e-4 F32)"
        local pm
        for pm in b32 demo; do
            local model=$M32
            [ $pm = demo ] && model=$ROOT/models/demo
            if [ $pm = b32 ] && ((!have_models)); then continue; fi
            echo "--- $pm ($model) ---"
            run "$LOGS/parity_$pm.log" 90 "$BE" --parity --model "$model"
            local rc=$?
            sed 's/^/  /' "$LOGS/parity_$pm.log" | grep -v '^  PARITY'
            if grep -q '^PARITY' "$LOGS/parity_$pm.log"; then
                grep '^PARITY' "$LOGS/parity_$pm.log" | sed "s/^PARITY /parity $pm: /" >>"$SUMMARY"
            else
                summ "parity $pm: no result (rc=$rc)"
            fi
        done
        if [ -n "$PYREF" ]; then
            echo "--- the PyTorch baseline computes the same function (eager model vs clip_ref, small model) ---"
            local dt
            for dt in bf16 f32; do
                run "$LOGS/ref_check_$dt.log" 60 "$PYREF" bench/encoder_ref.py check --device cuda --dtype $dt
                sed 's/^/  /' "$LOGS/ref_check_$dt.log" | grep -v Warning | tail -n 4
                grep '^torch eager' "$LOGS/ref_check_$dt.log" | sed 's/^/reference check: /' >>"$SUMMARY"
            done
        fi
    fi

    # ------------------------------------------------------------------
    if has_step index && ((built)); then
        section "e. index build --device $INDEX_DEVICE over $N_JPEGS generated JPEGs"
        local J=$WORK/jpegs
        run "$LOGS/jpegs.log" 120 "$BJ" --out "$J" --n "$N_JPEGS"
        sed 's/^/  /' "$LOGS/jpegs.log"
        summ "$(grep '^jpegs:' "$LOGS/jpegs.log" || echo 'jpegs: FAILED')"
        local model=$M32
        ((have_models)) || model=$ROOT/models/demo
        local b
        for b in default 256; do
            local idx=$WORK/index-$b
            rm -rf "$idx"
            local bopt=""
            [ $b = 256 ] && bopt="--batch 256"
            echo "--- sightline index build --device $INDEX_DEVICE --batch $b (model $(basename "$model")) ---"
            # shellcheck disable=SC2086
            run "$LOGS/index_build_$b.log" 150 "$SL" index build --device "$INDEX_DEVICE" --model "$model" \
                --images "$J" --index "$idx" $bopt --quiet
            local rc=$? secs=$LAST_SECS
            tail -n 3 "$LOGS/index_build_$b.log" | sed 's/^/  /'
            if ((rc == 0)); then
                local n
                n=$(grep -oE '^[^:]*: [0-9]+ images in the index' "$LOGS/index_build_$b.log" |
                    grep -oE '[0-9]+ images' | grep -oE '[0-9]+')
                n=${n:-$N_JPEGS}
                local rate
                rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
                local line="index build --device $INDEX_DEVICE (batch $b): $n images in $secs s = $rate images/s (wall, process start to exit)"
                if [ -n "$enc_rate" ]; then
                    line="$line; encoder alone (B/32, batch 256, bench_encoder) $enc_rate images/s; ratio $(awk -v a="$rate" -v b="$enc_rate" 'BEGIN { printf "%.2f", a / b }')"
                fi
                echo "  $line"
                summ "$line"
                summ "  its own line: $(grep -E 'images/s' "$LOGS/index_build_$b.log" | tail -n1)"
            else
                summ "index build (batch $b): FAILED (rc=$rc): $(tail -n1 "$LOGS/index_build_$b.log")"
            fi
        done
    fi

    # ------------------------------------------------------------------
    if has_step train && ((built)); then
        section "t. sightline train on cpu, cuda-f32, cuda (BF16) and 2 ranks (tiny config, 20 steps)"
        local J=$WORK/jpegs T=$WORK/train
        [ -d "$J" ] || run "$LOGS/jpegs_train.log" 120 "$BJ" --out "$J" --n 512
        rm -rf "$T" && mkdir -p "$T"
        # 256 pictures with made-up captions (the point is CPU/GPU agreement, not learning)
        find "$J" -name '*.jpg' | sort | head -n 256 |
            awk '{ split("red green blue small large round square bright dark striped", w, " ");
                   printf "%s\ta %s %s picture number %d\n", $0, w[NR % 10 + 1], w[(NR * 7) % 10 + 1], NR }' \
                >"$T/data.tsv"
        cut -f2 "$T/data.tsv" >"$T/captions.txt"
        run "$LOGS/train_tok.log" 60 "$SL" tokenizer train --captions "$T/captions.txt" --out "$T/tok" \
            --vocab-size 600
        # the CPU, the GPU in F32 (parity) and in BF16 (mixed precision), then two
        # data-parallel ranks sharing the GPU (NCCL_HOSTID per rank: NCCL refuses
        # two ranks on one GPU of one host) with half the batch each
        local dev common=(--config "$ROOT/etc/train/tiny.json" --tokenizer "$T/tok"
            --data "$T/data.tsv" --steps 20 --no-augment --no-shuffle --quiet)
        for dev in cpu cuda-f32 cuda; do
            run "$LOGS/train_$dev.log" 120 "$SL" train "${common[@]}" --out "$T/out-$dev" \
                --device "$dev"
            echo "  train --device $dev: rc=$? in ${LAST_SECS}s"
        done
        local half
        half=$(awk -F: '/"batch"/ { gsub(/[ ,]/, "", $2); print int($2 / 2) }' "$ROOT/etc/train/tiny.json")
        rm -f "$T/dist.id"
        local r pids=()
        for r in 0 1; do
            run "$LOGS/train_dp$r.log" 150 env SL_RANK=$r SL_WORLD_SIZE=2 \
                NCCL_HOSTID="sl-gpu-run-rank$r" NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 \
                "$SL" train "${common[@]}" --out "$T/out-dp" --device cuda-f32 --batch "$half" \
                --dist-file "$T/dist.id" &
            pids+=($!)
        done
        local rcs=""
        for r in 0 1; do
            wait "${pids[$r]}"
            rcs="$rcs $?"
        done
        echo "  train, 2 ranks x batch $half on one GPU (cuda-f32): rc$rcs"
        # max relative loss difference of two train logs (step by step)
        cmp_logs() {
            paste "$1" "$2" | awk -F'\t' '
                { match($1, /"loss": [-0-9.e+]+/); a = substr($1, RSTART + 8, RLENGTH - 8) + 0;
                  match($2, /"loss": [-0-9.e+]+/); b = substr($2, RSTART + 8, RLENGTH - 8) + 0;
                  d = a - b; if (d < 0) d = -d; r = d / (a < 0 ? -a : a);
                  if (r > m) m = r; n++; last_a = a; last_b = b }
                END { printf "%d steps, max relative loss difference %.3g (final loss %.6f vs %.6f)", n, m, last_a, last_b }'
        }
        local a b what
        for what in "cpu cuda-f32" "cpu cuda" "cuda-f32 dp"; do
            read -r a b <<<"$what"
            if [ -f "$T/out-$a/train_log.jsonl" ] && [ -f "$T/out-$b/train_log.jsonl" ]; then
                local cmp
                cmp=$(cmp_logs "$T/out-$a/train_log.jsonl" "$T/out-$b/train_log.jsonl")
                echo "  $a vs $b: $cmp"
                summ "train $a vs $b: $cmp"
            else
                local lg=$LOGS/train_$b.log
                [ "$b" = dp ] && lg=$LOGS/train_dp0.log
                summ "train $a vs $b: no comparison ($(tail -n1 "$lg"))"
            fi
        done
        summ "  (dp = 2 ranks on one GPU, batch $half each, vs one rank with batch $((2 * half)); F32: expect <= 1e-5; BF16 vs cpu: expect ~1e-2)"
    fi

    # ------------------------------------------------------------------
    # Training speed: ViT-B/32, sightline's GPU step beside PyTorch eager AMP
    # (bench/train.c, bench/train_ref.py), BF16 then F32. Typical ~1.5-2 min.
    if has_step trainbench && ((built)); then
        section "t2. training speed: ViT-B/32 on the GPU beside PyTorch eager (bench_train)"
        local BT=$BIN/bench/bench_train
        # not among the build step's targets: built here (incremental: a few seconds)
        run "$LOGS/build_bench_train.log" 60 cmake --build "$BUILD" -j"$JOBS" --target bench_train ||
            tail_log "$LOGS/build_bench_train.log" 20
        if [ ! -x "$BT" ]; then
            summ "trainbench: no bench_train (see build_bench_train.log)"
        elif [ -z "$PYMAKE" ]; then
            summ "trainbench: no Python with torch to write the checkpoint: not run"
        else
            local py=${PYREF:-$PYMAKE} vt=1
            [ -n "$PYREF" ] || vt=0
            if [ -n "$PYREF" ]; then
                echo "--- the PyTorch baseline computes train_ref.loss_of (AMP on the GPU vs float32 on the CPU, small model) ---"
                run "$LOGS/trainbench_check.log" 45 "$PYREF" bench/train_ref.py check cuda amp
                sed 's/^/  /' "$LOGS/trainbench_check.log" | grep -v Warning | tail -n 3
                local chk
                chk=$(grep -E '^(loss|train_ref check)' "$LOGS/trainbench_check.log" | tr '\n' ' ')
                summ "trainbench reference check: ${chk:-no result}"
            else
                summ "trainbench: PyTorch reference NOT run (no torch with CUDA)"
            fi
            local dv
            for dv in cuda cuda-f32; do
                local steps=20 vb=256 lim=120
                [ $dv = cuda-f32 ] && steps=10 lim=75
                ((q)) && steps=3 vb=16
                echo "--- bench_train --device $dv --vitb32 $steps --vitb32-batch $vb --vitb32-torch $vt ---"
                run "$LOGS/trainbench_$dv.log" $lim "$BT" --device $dv --vitb32 $steps --vitb32-batch $vb \
                    --vitb32-torch $vt --python "$py" --threads "$(nproc)" --settle 2
                local rc=$?
                sed 's/^/  /' "$LOGS/trainbench_$dv.log" | grep -v '^  RESULT'
                # (a RESULT line also when only the PyTorch run failed: rc 1, its fields -1)
                if grep -q '^RESULT' "$LOGS/trainbench_$dv.log"; then
                    grep '^RESULT' "$LOGS/trainbench_$dv.log" | awk '{
                        for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                        printf "trainbench ViT-B/32 %s %s batch %s: sightline %.1f samples/s = %.1f TFLOP/s, MFU %.1f%% (of %s)",
                            r["device"], r["dtype"], r["batch"], r["sl_per_s"], r["sl_tflops"], 100 * r["sl_mfu"], r["peak_tflops"]
                        if (r["torch_per_s"] > 0) {
                            printf "; PyTorch eager %s %.1f samples/s (inputs on GPU), MFU %.1f%%; sightline/PyTorch %.2fx",
                                (r["dtype"] == "bf16" ? "AMP" : "F32"), r["torch_per_s"], 100 * r["torch_mfu"], r["ratio"]
                            if (r["dtype"] == "bf16") printf " (target >= 1.0x: %s)", (r["ratio"] >= 1.0 ? "met" : "NOT met")
                            printf "; vs host-fed PyTorch (%.1f/s) %.2fx; AdamW %s, attn %s, torch %s",
                                r["torch_host_per_s"], r["ratio_host"], r["adamw"], r["attn"], r["torch"]
                        }
                        printf "; GPU MB sightline %s, torch %s (reserved %s); first loss %s vs %s\n",
                            r["sl_gpu_mb"], r["torch_gpu_mb"], r["torch_reserved_mb"], r["sl_loss0"], r["torch_loss0"]
                        sub(/^RESULT /, "")
                        print "  raw: " $0
                    }' >>"$SUMMARY"
                    ((rc == 0)) || summ "  trainbench $dv: rc=$rc: $(grep -v '^RESULT' "$LOGS/trainbench_$dv.log" | tail -n1)"
                else
                    summ "trainbench $dv: FAILED or skipped (rc=$rc): $(grep -v '^RESULT' "$LOGS/trainbench_$dv.log" | tail -n1)"
                fi
            done
        fi
    fi

    # ------------------------------------------------------------------
    if has_step search && ((built)); then
        section "d. bench_gpu_search (retrieval ranks, top-k)"
        local sz=""
        ((q)) && sz="--images 500 --texts 2500 --n 100000 --nq 1000 --cpu-queries 100 --rounds 1"
        # shellcheck disable=SC2086
        run "$LOGS/bench_gpu_search.log" 120 "$BS" $sz
        local rc=$?
        sed 's/^/  /' "$LOGS/bench_gpu_search.log"
        if ((rc == 0 || rc == 1)) && grep -q speed-up "$LOGS/bench_gpu_search.log"; then
            grep -E 'retrieval ranks:|top-k:|speed-up|differ|GPU  device|GPU  end to end|CPU  total|CPU  sgemm' \
                "$LOGS/bench_gpu_search.log" | sed 's/^ */gpu_search: /' >>"$SUMMARY"
        else
            summ "gpu_search: no result (rc=$rc)"
        fi
    fi

    # ------------------------------------------------------------------
    if has_step sanitize && ((built)); then
        section "b2. compute-sanitizer (memcheck on the cuda tests, racecheck on search and train_ops)"
        local cs=/usr/local/cuda/bin/compute-sanitizer
        [ -x "$cs" ] || cs=$(command -v compute-sanitizer 2>/dev/null || true)
        if [ -z "$cs" ] || [ ! -x "$cs" ]; then
            echo "  compute-sanitizer: not found"
            summ "compute-sanitizer: not found, not run"
        else
            local spec
            for spec in memcheck:test_cuda memcheck:test_cuda_search memcheck:test_cuda_encoder racecheck:test_cuda_search \
                memcheck:test_cuda_train_ops racecheck:test_cuda_train_ops; do
                local tool=${spec%%:*} t=${spec#*:}
                local exe
                exe=$(find "$BUILD" -maxdepth 3 -type f -name "$t" -perm -u+x | head -n1)
                if [ -z "$exe" ]; then
                    summ "sanitizer $tool $t: no executable"
                    continue
                fi
                local lim=120
                ((q)) && lim=40
                (cd "$(dirname "$exe")" && run "$LOGS/sanitize_${tool}_$t.log" $lim "$cs" --tool "$tool" \
                    --error-exitcode 86 "$exe")
                local rc=$?
                local es
                es=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/sanitize_${tool}_$t.log" | tail -n1)
                echo "  $tool $t: ${es:-no summary line} (rc=$rc)"
                ((rc != 0 && rc != 124 && rc != 125)) && tail_log "$LOGS/sanitize_${tool}_$t.log" 15
                local verdict="PASS"
                ((rc == 86)) && verdict="ERRORS"
                ((rc == 124 || rc == 137)) && verdict="TIMED OUT (no verdict)"
                ((rc == 125)) && verdict="SKIPPED (budget)"
                ((rc == 77)) && verdict="SKIPPED (no device)"
                ((rc != 0 && rc != 86 && rc != 124 && rc != 137 && rc != 125 && rc != 77)) && verdict="FAILED rc=$rc"
                summ "sanitizer $tool $t: $verdict; ${es:-no summary}"
            done
        fi
    fi

    # ------------------------------------------------------------------
    section "f. summary ($SUMMARY -> $OUT/summary.txt)"
    summ "total wall time: $(elapsed) s"
    cat "$SUMMARY"
    cp "$SUMMARY" "$OUT/summary.txt"
    # Every log in one archive (logs over 8 MB keep their first and last 2 MB).
    local f
    for f in "$LOGS"/*; do
        [ -f "$f" ] || continue
        if [ "$(stat -c %s "$f")" -gt 8388608 ]; then
            { head -c 2097152 "$f"; printf '\n[... cut ...]\n'; tail -c 2097152 "$f"; } >"$f.cut" && mv "$f.cut" "$f"
        fi
    done
    tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs summary.txt 2>/dev/null
    echo "results: $OUT/summary.txt, $OUT/run.log, $OUT/logs.tar.gz"
}

main "$@" 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
