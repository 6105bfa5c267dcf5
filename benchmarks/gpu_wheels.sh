#!/usr/bin/env bash
# For a GPU machine without internet access whose Python (3.12) already has torch, torchvision, lightning, timm,
# transformers and onnxruntime but not the packages below (all pure Python, about 1.2 MB): fetches their wheels
# here into .whl/ (ignored by git through .git/info/exclude), to be copied there with the repository. There:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site && OUT=<folder> bash benchmarks/gpu_session.sh
# The versions are the ones this repository was last tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  jsonargparse==4.53.0 typeshed-client==2.15.0 docstring-parser==0.18.0 torch-pruning==1.6.1 submitit==1.5.4
ls -la .whl
