import numpy as np
import pytest


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n_per: int, n_blobs: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters on the sphere: (n_per * n_blobs, dim) unit rows and their labels."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((n_blobs, dim)))
    labels = np.repeat(np.arange(n_blobs), n_per)
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    return unit_rows(x), labels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="package", autouse=True)
def single_thread():
    """Run this package's tiny problems on one thread (restored afterwards).

    At these sizes threads only add synchronisation, and on a busy 2-core machine OpenMP
    spin-waiting (torch and faiss each bring a pool) made the suite ~10x slower.
    """
    import faiss
    import torch

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
