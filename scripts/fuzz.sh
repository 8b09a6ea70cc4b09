#!/usr/bin/env bash
# Fuzzes SyncKit's decoders with libFuzzer (AddressSanitizer on): builds every fuzz target once,
# then runs each for a bounded time from its seed corpus (Fuzz/Corpus/<target>, copied to a
# scratch working corpus so the committed one never changes). Exits 1 when a target finds a
# crash, a trap, a leak, a timeout or an out-of-memory, after printing the reproducer and how to
# replay it. See Fuzz/README.md.
#
#   bash scripts/fuzz.sh [--seconds N] [--jobs N] [TARGET...]
#                                   TARGETs: wire record path dns ignore config (default: all);
#                                   --jobs: targets run at once (default: the number of cores)
#   bash scripts/fuzz.sh --write-seeds [TARGET...]   regenerate Fuzz/Corpus/<target> from the
#                                                    seeds in the targets' sources (the
#                                                    regression-* reproducers stay)
#
# The build has its own scratch path, .build-fuzz, and sets SYNCKIT_FUZZ=1, which makes
# Package.swift describe the fuzz targets (and nothing else); a normal build is unaffected.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

all=(wire record path dns ignore config bep)
seconds=30
jobs=$(nproc 2>/dev/null || echo 1)
write_seeds=0
targets=()
while (($#)); do
    case "$1" in
        --seconds) [[ ${2:-} =~ ^[0-9]+$ && $2 -gt 0 ]] || { echo "fuzz: --seconds needs a positive number" >&2; exit 2; }
                   seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#--seconds=}; [[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "fuzz: --seconds needs a positive number" >&2; exit 2; }
                     shift ;;
        --jobs) [[ ${2:-} =~ ^[0-9]+$ && $2 -gt 0 ]] || { echo "fuzz: --jobs needs a positive number" >&2; exit 2; }
                jobs=$2; shift 2 ;;
        --write-seeds) write_seeds=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [[ " ${all[*]} " == *" $1 "* ]] || { echo "fuzz: unknown target $1; the targets are: ${all[*]}" >&2; exit 2; }
           targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all[@]}")

# Per target: the executable (Fuzz/Sources/<module>) and the longest input worth trying: a few
# frames or an index update of several records; one record with a path near PATH_MAX; a path
# just over PATH_MAX (4096); a packet just over the mDNS limit (9000); a small .syncignore with
# a few paths (matching is O(pattern x path) by design, so the target's own limit of 1 s of CPU
# per input needs the input kept at a size where that stays far below it in this ASan build);
# a config file; a BEP hello and a few messages.
declare -A module=([wire]=FuzzWire [record]=FuzzRecord [path]=FuzzPath [dns]=FuzzDNS [ignore]=FuzzIgnore [config]=FuzzConfig [bep]=FuzzBEP)
declare -A max_len=([wire]=8192 [record]=8192 [path]=4200 [dns]=9100 [ignore]=2048 [config]=4096 [bep]=8192)
# Seconds one input may take before libFuzzer calls it a hang (every decoder takes milliseconds).
timeout=10

scratch=.build-fuzz
export SYNCKIT_FUZZ=1
# Swift's own crash backtracer would run alongside libFuzzer's and ASan's handlers (and trips
# ASan reading stacks); libFuzzer prints the stack and writes the reproducer.
export SWIFT_BACKTRACE=enable=no
build_start=$(date +%s)
mkdir -p "$scratch"
# Every target at once when all are asked for (one plan, the links in parallel: the package
# holds nothing else in fuzz mode); else one product at a time.
if [[ "${targets[*]}" == "${all[*]}" ]]; then products=(""); else products=("${targets[@]}"); fi
for t in "${products[@]}"; do
    echo "fuzz: building ${t:+${module[$t]}}${t:-every target}"
    # Into a log: the gold linker prints hundreds of harmless warnings about ASan's symbols.
    if ! swift build --scratch-path "$scratch" ${t:+--product "${module[$t]}"} > "$scratch/build.log" 2>&1; then
        grep -v "ld.gold: warning" "$scratch/build.log" | tail -n 40 >&2 || true
        echo "fuzz: the build of ${t:+${module[$t]}}${t:-the fuzz targets} failed (full log: $scratch/build.log)" >&2
        exit 1
    fi
done
bin=$(swift build --scratch-path "$scratch" --show-bin-path)
echo "fuzz: built ${targets[*]} in $(( $(date +%s) - build_start )) s"

if ((write_seeds)); then
    for t in "${targets[@]}"; do
        # The reproducers of fixed bugs (regression-*) are not generated: they stay.
        mkdir -p "Fuzz/Corpus/$t" && find "Fuzz/Corpus/$t" -type f ! -name 'regression-*' -delete
        "$bin/${module[$t]}" --write-seeds "Fuzz/Corpus/$t"
        echo "fuzz: Fuzz/Corpus/$t has $(ls "Fuzz/Corpus/$t" | wc -l) files"
    done
    exit 0
fi

work=$PWD/$scratch/runs

# One target's run; its exit status goes to $dir/status.
run() {
    local t=$1 dir=$work/$1 status=0
    # -rss_limit_mb: the process (Swift + ASan take about 500 MB); -malloc_limit_mb: a single
    # allocation that large is a bug (no decoder needs more than a 16 MiB frame); leaks are
    # checked by default with ASan. TMPDIR: the `path` target makes its scratch folder there
    # (removed at exit, kept after a crash for a look).
    TMPDIR="$dir/tmp" "$bin/${module[$t]}" "$dir/corpus" \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout="$timeout" \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" > "$dir/log" 2>&1 || status=$?
    echo "$status" > "$dir/status"
}

# Each target is one single-threaded process: as many at a time as there are cores.
running=0
for t in "${targets[@]}"; do
    dir=$work/$t
    rm -rf "$dir" && mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
    cp Fuzz/Corpus/"$t"/* "$dir/corpus/"
    echo "fuzz: $t for $seconds s (max_len ${max_len[$t]}, seeds $(ls Fuzz/Corpus/"$t" | wc -l))"
    run "$t" &
    if (( ++running >= jobs )); then wait -n || true; running=$((running - 1)); fi
done
wait

failed=()
for t in "${targets[@]}"; do
    dir=$work/$t
    status=$(cat "$dir/status" 2>/dev/null || echo "no status")
    # The last status line (`#N DONE cov: ... ft: ... corp: ... exec/s: ...`) is the summary.
    summary=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1 || true)
    echo "fuzz: $t: ${summary:-no status line}"
    artifacts=("$dir"/artifacts/*)
    if [[ $status != 0 || -e ${artifacts[0]} ]]; then
        failed+=("$t")
        grep -v -E '^#[0-9]+|^INFO:|^\s*$' "$dir/log" | head -n 60 >&2 || true
        echo "fuzz: $t FAILED (exit status $status); full log: $dir/log" >&2
        for a in "${artifacts[@]}"; do
            [[ -e $a ]] || continue
            echo "fuzz: reproducer: $a" >&2
            echo "fuzz: replay it:  SWIFT_BACKTRACE=enable=no $bin/${module[$t]} $a" >&2
        done
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no failures in ${targets[*]} ($seconds s each)"
