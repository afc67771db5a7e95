#!/usr/bin/env bash
# Download the wheels `python -m benchmarks.run` needs on the GPU machine (Python 3.12, x86-64, no network), into
# .whl/ (git-ignored; WHL_DIR overrides). The machine already has torch, torchvision, numpy, pandas, pyarrow,
# Pillow, scipy, scikit-learn, matplotlib, regex, tqdm, timm, huggingface-hub and safetensors.
#
#   bash benchmarks/gpu_wheels.sh             # open_clip and what it lacks there (~2.4 MB)
#   bash benchmarks/gpu_wheels.sh --dagster   # plus Dagster and what it lacks there (~+22 MB)
#
# Versions are those of the project's tested .venv. grpcio, protobuf and typing_extensions are carried
# although the machine has some version of them: grpcio-health-checking's generated code needs
# protobuf >= 7.35 and pydantic needs typing_extensions >= 4.16; the carried ones take precedence there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${WHL_DIR:-.whl}"

packages=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4)
if [[ "${1:-}" == "--dagster" ]]; then
  packages+=(
    dagster==1.13.28 dagster-pipes==1.13.28 dagster-shared==1.13.28
    alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 antlr4-python3-runtime==4.13.2
    coloredlogs==14.0 humanfriendly==10.0 docstring_parser==0.18.0
    grpcio==1.85.3 grpcio-health-checking==1.85.1 protobuf==7.36.2
    python-dotenv==1.2.4 pytz==2026.6 tzdata==2026.6 structlog==26.1.0 tomli==2.5.0 toposort==1.10
    universal_pathlib==0.3.10 pathlib_abc==0.5.2 platformdirs==4.14.8 tomlkit==0.15.2 watchdog==6.0.0
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing_extensions==4.16.0
  )
fi

python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${packages[@]}"
du -sh "$dest"
