#!/usr/bin/env bash
# The GPU check on a lent GPU machine, which has no network and lacks rasterio, GDAL and
# dask (../shared/GPU-RUN.md): install the wheels that travel with the tree (`make
# gpu-wheels` fills .whl/ here; carry it), make pipelines/ importable as geoseg_pipelines,
# then run `python -m benchmarks.gpu_check` with the machine's own python3 and torch.
# Results (report.md, report.json) go to $OUT when it is set. Arguments pass through:
#   bash benchmarks/gpu_check.sh --minutes 9
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/geoseg-gpu-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
fi
mkdir -p "$SITE/.links"
ln -sfn "$PWD/pipelines" "$SITE/.links/geoseg_pipelines"
export PYTHONPATH="$SITE:$SITE/.links:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore
"$PY" -c "import rasterio, dask, distributed, segmentation_models_pytorch, geoseg, geoseg_pipelines" \
  || { echo "gpu_check.sh: a package is missing (see make gpu-wheels)" >&2; exit 1; }
exec "$PY" -m benchmarks.gpu_check "$@"
