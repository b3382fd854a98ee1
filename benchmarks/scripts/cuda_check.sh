#!/usr/bin/env bash
# On a machine with a CUDA GPU, everything edgespec claims about CUDA in one run (113 s on an H200 host):
#   bash benchmarks/scripts/cuda_check.sh [OUT]        # OUT defaults to runs/cuda-check
# 1. the gpu-marked tests: training with mixed precision, the methods.md invariants on the GPU, a specialist trained
#    there, GPU latency measured through the host-gpu profile (tests/integration/test_cuda.py);
# 2. training throughput side by side: CPU, CUDA fp32, CUDA AMP (benchmarks/scripts/train_speed.py);
# 3. the default pipeline with host-gpu added to its devices: every model's GPU latency measured on this host;
# 4. the TensorRT paths (tests marked `tensorrt`/`gpu` in tests/unit/test_export_tensorrt.py and
#    tests/integration/test_tensorrt_gpu.py): real strongly typed engines on this host's TensorRT 10.x or 11.x,
#    engine keys refused elsewhere, the fp16 guard on a real engine, trtexec-style H2D/compute/D2H timing with and
#    without a CUDA graph, for TensorRT and for the host-gpu PyTorch path. Without TensorRT (pip install -e
#    '.[tensorrt]', which downloads NVIDIA's library wheels) the TensorRT tests skip and say so; the PyTorch timing
#    still runs. Until this part has run on a GPU machine, every TensorRT figure edgespec reports is unverified;
# 5. benchmarks/scripts/gpu_phases.py on the pipeline's export: per-phase GPU timing of every engine and of each
#    run's checkpoint on the GPU (host-gpu), without and with --cuda-graph.
# PYTHON names the interpreter (default python3). Exits 1 if any part failed; each part's output is kept in OUT.
set -uo pipefail
out=${1:-runs/cuda-check}
py=${PYTHON:-python3}
mkdir -p "$out"
"$py" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA',
torch.version.cuda, torch.cuda.get_device_name() if ok else 'no GPU visible'); sys.exit(0 if ok else 1)" || {
  echo "error: no CUDA GPU is visible to $py; run this on a GPU machine" >&2; exit 2; }
status=0
echo "== gpu tests"
"$py" -m pytest -q -p no:cacheprovider -m gpu -rs -s tests/integration/test_cuda.py 2>&1 | tee "$out/gpu-tests.log" \
  || status=1
echo "== tensorrt"
"$py" -c "import importlib.util as u; import sys
if u.find_spec('tensorrt') is None: print('TensorRT: not installed; the tensorrt-marked tests will skip')
else:
    import tensorrt; print('TensorRT', tensorrt.__version__)" 2>&1 | tee "$out/tensorrt-version.txt"
"$py" -m pytest -q -p no:cacheprovider -m "tensorrt or gpu" -rs tests/unit/test_export_tensorrt.py \
  tests/integration/test_tensorrt_gpu.py 2>&1 | tee "$out/tensorrt-tests.log" || status=1
echo "== training throughput"
"$py" benchmarks/scripts/train_speed.py --json "$out/train_speed.json" 2>&1 | tee "$out/train_speed.txt" || status=1
echo "== pipeline with host-gpu"
"$py" -m toolkit pipeline --show-default | sed 's/devices: \[host-cpu,/devices: [host-cpu, host-gpu,/' \
  > "$out/pipeline.yaml"
grep -q "host-gpu" "$out/pipeline.yaml" || { echo "error: could not add host-gpu to the default pipeline" >&2; exit 1; }
"$py" -m toolkit pipeline "$out/pipeline.yaml" --out "$out/pipeline" --quiet 2>&1 | tee "$out/pipeline.txt" || status=1
echo "== GPU phases (H2D / compute / D2H by CUDA events), without and with a CUDA graph"
export_dir=$(dirname "$(find "$out/pipeline" -name manifest.json | head -n 1)")
if [ -n "$export_dir" ] && [ "$export_dir" != "." ]; then
  for graph in "" "--cuda-graph"; do
    "$py" benchmarks/scripts/gpu_phases.py "$export_dir" $graph --json "$out/gpu-phases${graph:+-graph}.json" 2>&1 \
      | tee -a "$out/gpu-phases.txt" || status=1
  done
else
  echo "error: the pipeline left no export directory to time" >&2; status=1
fi
exit $status
