#!/usr/bin/env bash
# The benchmarks of issue 17 on a GPU workstation (one GPU, >= 12 cores), in one go of about MINUTES + 2 minutes:
#   1. exact model densities per second with the network on the GPU (exact_density_rate.py, alone on the machine);
#   2. at the same time, each run pinned to its own core:
#      - the reference: 4 independent plain parallel-tempering runs of alanine dipeptide in vacuum (cores 0-3);
#      - the comparison: plain against augmented, 3 seeds, all 6 runs at once (cores 4-9); the augmented
#        sampler's network trains and proposes on the GPU (ModelSettings.device 'auto'), the MD of both runs
#        on OpenMM's Reference platform with one thread;
#      - importance sampling at 300 K from a frozen model, network on the GPU (core 10; IS_MODEL, if given);
#   3. importance sampling from the model the seed-0 augmented run trained here.
# The comparison and the reference are analysed afterwards, anywhere, from the traces:
#   python compare_remd.py --reference alanine_vacuum_6 --runs 4 --traces TRACES
#   python compare_remd.py --system alanine_vacuum_6 --seeds 3 --analyze-only --traces TRACES --tag TAG
#
# MINUTES=6 TAG=h200 IS_MODEL=path/to/model.pt bash benchmarks/gpu_workstation.sh
# The K = 4,096 same-clock comparison, without a new reference (compare_reference_alanine_vacuum.json exists):
# MINUTES=6 TAG=h200_k4096 SYSTEM=alanine_vacuum_6_gpu REFERENCE_RUNS=0 bash benchmarks/gpu_workstation.sh
set -u
cd "$(dirname "$0")"
MINUTES=${MINUTES:-6}
SYSTEM=${SYSTEM:-alanine_vacuum_6}
REFERENCE_RUNS=${REFERENCE_RUNS:-4}
TAG=${TAG:-gpu}
TRACES=${TRACES:-../compare_traces_$TAG}
IS_MODEL=${IS_MODEL:-}
IS_SAMPLES=${IS_SAMPLES:-32768}
mkdir -p "$TRACES"
export PYTHONUNBUFFERED=1

python exact_density_rate.py --model ../tests/data/alanine_dipeptide_vacuum_model.pt --device cuda \
    --tag "alanine_vacuum_256x3_20steps_$TAG" --batch-sizes 1 32 256 1024 4096 --repeats 2

if [ "$REFERENCE_RUNS" -gt 0 ]; then
    python compare_remd.py --reference alanine_vacuum_6 --minutes "$MINUTES" --runs "$REFERENCE_RUNS" --first-core 0 \
        --traces "$TRACES" >"$TRACES/reference.out" 2>&1 &
fi
python compare_remd.py --system "$SYSTEM" --minutes "$MINUTES" --seeds 3 --all-at-once --first-core 4 --runs-only \
    --traces "$TRACES" >"$TRACES/compare.out" 2>&1 &
if [ -n "$IS_MODEL" ]; then
    taskset -c 10 python model_importance_sampling.py --model "$IS_MODEL" --device cuda --batch-size 4096 \
        --samples "$IS_SAMPLES" --temperatures 300 --tag "$(basename "$IS_MODEL" .pt)_$TAG"
fi
wait
tail -3 "$TRACES"/*.out

python model_importance_sampling.py --model "$TRACES/${SYSTEM}_augmented_seed0_model.pt" --device cuda \
    --batch-size 4096 --samples "$IS_SAMPLES" --temperatures 300 --tag "${SYSTEM}_seed0_${MINUTES}min_$TAG"
