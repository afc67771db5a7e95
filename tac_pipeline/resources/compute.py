"""Compute resources: the CLIP encoder settings and the device each step runs on.

GPU pinning: the executor limits steps tagged ``tac/gpu`` to the number of visible GPUs; inside a step
:meth:`ComputeDeviceResource.acquire` takes an exclusive file lock on one GPU, so concurrent steps (and
concurrent runs sharing ``lock_dir``) each get their own device. Without CUDA the same code runs on CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

GPU_TAG = "tac/gpu"


class EncoderOverrideError(RuntimeError):
    """A run's config changed the encoder of an embedding asset; the message names the setting to use."""


def visible_gpu_count() -> int:
    """Number of CUDA devices this process may use (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install means CPU, not a crash at load time
        return 0


class ComputeDeviceResource(ConfigurableResource):
    """Which device TAC's tensors live on."""

    device: str = Field(
        default="auto",
        description="'auto' (a free visible GPU, else CPU), 'cpu', 'cuda' (a free GPU) or 'cuda:N' (that GPU).",
    )
    lock_dir: str | None = Field(
        default=None, description="Folder for the per-GPU lock files (default: the system temp folder)."
    )

    @contextlib.contextmanager
    def acquire(self, log=None) -> Iterator[str]:
        """Yield a device string (``cpu`` or ``cuda:N``), holding that GPU exclusively while inside."""
        wanted = self.device.strip().lower()
        n_gpus = visible_gpu_count()
        if wanted == "cpu" or (wanted == "auto" and n_gpus == 0):
            yield "cpu"
            return
        if n_gpus == 0:
            raise RuntimeError(
                f"device {self.device!r} was requested but no CUDA device is visible; "
                "set the compute_device resource's device to 'auto' or 'cpu'"
            )
        candidates = [int(wanted.split(":", 1)[1])] if ":" in wanted else list(range(n_gpus))
        lock_dir = Path(self.lock_dir or tempfile.gettempdir())
        lock_dir.mkdir(parents=True, exist_ok=True)
        handles = {i: open(lock_dir / f"tac-gpu-{i}.lock", "a+") for i in candidates}  # noqa: SIM115
        try:
            waited = 0.0
            while True:
                for index, handle in handles.items():
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    if log is not None:
                        log.info(f"Running on cuda:{index} (locked after {waited:.1f} s).")
                    try:
                        yield f"cuda:{index}"
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    return
                time.sleep(0.5)
                waited += 0.5
        finally:
            for handle in handles.values():
                handle.close()


class ClipEncoderResource(ConfigurableResource):
    """The open_clip model that embeds images and nouns (docs/METHOD.md §1–§2)."""

    model_name: str = Field(default="ViT-B-32", description="open_clip model name, or 'tac-tiny' offline.")
    pretrained: str | None = Field(
        default="openai", description="open_clip pretrained tag (None: random init)."
    )
    checkpoint: str | None = Field(
        default=None, description="Local checkpoint file, used instead of the tag."
    )
    cache_dir: str | None = Field(default=None, description="Where downloaded weights are cached.")
    batch_size: int = Field(default=256, description="Images or prompts per forward pass.")
    num_workers: int | None = Field(
        default=None, description="Image-decoding processes (default: CPU count)."
    )

    def effective_pretrained(self) -> str | None:
        if self.model_name == "tac-tiny":
            return None
        return self.pretrained

    def identity(self) -> str:
        """A short version string that changes whenever the embeddings would change."""
        parts = [self.model_name, self.effective_pretrained() or "random-init"]
        if self.checkpoint:
            path = Path(self.checkpoint)
            stat = path.stat() if path.exists() else None
            parts += [str(path.resolve()), f"{stat.st_size}-{int(stat.st_mtime)}" if stat else "missing"]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"{self.model_name}-{digest}"

    def require_identity(self, expected: str, asset: str) -> None:
        """Refuse to run ``asset`` with an encoder other than the one its code version names.

        The embedding assets' code version (staleness) and their row reuse follow the encoder the definitions
        were loaded with (``$TAC_CLIP_*``). An override of this resource's model, tag or checkpoint in a run's
        config would store rows of another encoder under that version, or mix both encoders in one table.
        Settings that do not change the embeddings (``batch_size``, ``num_workers``, ``cache_dir``) may be
        overridden freely.
        """
        if self.identity() == expected:
            return
        wanted = [
            f"TAC_CLIP_MODEL={self.model_name}",
            f"TAC_CLIP_PRETRAINED={self.effective_pretrained() or 'none'}",
        ]
        if self.checkpoint:
            wanted.append(f"TAC_CLIP_CHECKPOINT={self.checkpoint}")
        raise EncoderOverrideError(
            f"{asset}: this run's config overrides the clip_encoder resource (model {self.model_name!r}, "
            f"pretrained {self.effective_pretrained()!r}, checkpoint {self.checkpoint!r}), but the stored "
            f"embeddings, their reuse and their staleness follow the encoder the definitions were loaded with "
            f"(code version {expected}). Remove model_name / pretrained / checkpoint from the run config; to "
            f"change the encoder, set {' '.join(wanted)} in the code location's environment (or pass --model / "
            "--pretrained to make cluster) and reload the definitions."
        )

    def build(self, device: str):
        from tac_pipeline.encoders import ClipEncoder

        return ClipEncoder.from_pretrained(
            self.model_name,
            self.effective_pretrained(),
            checkpoint=self.checkpoint,
            cache_dir=self.cache_dir,
            device=device,
            batch_size=self.batch_size,
        )


def encoder_from_env(env: Mapping[str, str] | None = None) -> ClipEncoderResource:
    """Encoder settings from ``TAC_CLIP_MODEL``, ``TAC_CLIP_PRETRAINED``, ``TAC_CLIP_CHECKPOINT``,
    ``TAC_CLIP_CACHE_DIR`` (``env`` defaults to the process environment)."""
    env = os.environ if env is None else env
    pretrained = env.get("TAC_CLIP_PRETRAINED", "openai")
    return ClipEncoderResource(
        model_name=env.get("TAC_CLIP_MODEL", "ViT-B-32"),
        pretrained=None if pretrained.lower() in ("", "none") else pretrained,
        checkpoint=env.get("TAC_CLIP_CHECKPOINT") or None,
        cache_dir=env.get("TAC_CLIP_CACHE_DIR") or None,
    )
