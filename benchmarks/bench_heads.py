"""Head training: the engine's vectorised loop vs a faithful re-statement of the original.

The original (``train_head.py`` + ``data_utils.NeighborsDataset`` of the authors' repository)
feeds a DataLoader from a Dataset whose ``__getitem__`` returns one anchor and draws one
neighbour per modality with ``np.random.choice``; every step reads four losses back with
``.item()``. Both loops here use the same data, kNN tables, model, losses, optimiser, device
and number of epochs; the per-epoch test-set evaluation of the original is left out of both.

    python -m benchmarks.bench_heads                       # N=50,000, d=512, K=10, 20 epochs
    python -m benchmarks.bench_heads --n 10000 --epochs 5 --device cpu

Prints both wall times and their ratio (original / engine). Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tac_pipeline.tac import (
    ClusterHead,
    HeadTrainingConfig,
    balance_loss,
    cluster_metrics,
    consistency_loss,
    distillation_loss,
    knn_inner_product,
    predict_proba,
    resolve_device,
    train_heads,
)


class NeighborsDataset(Dataset):
    """The original per-sample dataset: anchor + one random neighbour per modality."""

    def __init__(self, dataset_text, dataset_image, indices_text, indices_image):
        self.dataset_text = dataset_text
        self.dataset_image = dataset_image
        self.indices_text = indices_text
        self.indices_image = indices_image

    def __len__(self):
        return len(self.dataset_text)

    def __getitem__(self, index):
        anchor_text = self.dataset_text.__getitem__(index)
        anchor_image = self.dataset_image.__getitem__(index)
        neighbor_text = self.dataset_text.__getitem__(np.random.choice(self.indices_text[index], 1)[0])
        neighbor_image = self.dataset_image.__getitem__(np.random.choice(self.indices_image[index], 1)[0])
        return anchor_text, anchor_image, neighbor_text, neighbor_image


def train_original(v, t, knn_v, knn_t, n_clusters, cfg: HeadTrainingConfig, device, seed=0):
    """The original training loop, restated with the engine's (numerically identical) losses."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    text_head = ClusterHead(v.shape[1], n_clusters).to(device)
    image_head = ClusterHead(v.shape[1], n_clusters).to(device)
    params = list(text_head.parameters()) + list(image_head.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    dataset = NeighborsDataset(
        TensorDataset(torch.from_numpy(t).float()), TensorDataset(torch.from_numpy(v).float()), knn_t, knn_v
    )
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    for _ in range(cfg.epochs):
        text_head.train()
        image_head.train()
        sums = [0.0, 0.0, 0.0]
        for text, image, neigh_text, neigh_image in loader:
            text, image = text[0].to(device), image[0].to(device)
            neigh_text, neigh_image = neigh_text[0].to(device), neigh_image[0].to(device)
            logit_text, logit_image = text_head(text), image_head(image)
            neigh_logit_text, neigh_logit_image = text_head(neigh_text), image_head(neigh_image)
            loss_distill = distillation_loss(logit_image, neigh_logit_text, cfg.tau) + distillation_loss(
                logit_text, neigh_logit_image, cfg.tau
            )
            loss_consist = consistency_loss(logit_text, logit_image)
            loss_entropy = balance_loss(logit_text, logit_image)
            loss = loss_distill + loss_consist - cfg.entropy_weight * loss_entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sums[0] += loss_distill.item()
            sums[1] += loss_consist.item()
            sums[2] += loss_entropy.item()
    return image_head.eval(), text_head.eval()


def synthetic(n: int, d: int, k: int, seed: int = 0):
    """Clustered unit vectors with labels and noisy 'counterparts' sharing the clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    v = centres[y] / np.sqrt(d) + 0.08 * rng.standard_normal((n, d)).astype(np.float32)
    t = centres[y] / np.sqrt(d) + 0.04 * rng.standard_normal((n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return v, t, y


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--neighbors", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cuda-graph", action="store_true", help="engine: replay each step as a CUDA graph")
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each loop this many times, keep the best"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--skip-original", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    v, t, y = synthetic(args.n, args.d, args.k)
    knn_v = knn_inner_product(v, args.neighbors)
    knn_t = knn_inner_product(t, args.neighbors)
    cfg = HeadTrainingConfig.for_clusters(args.k, epochs=args.epochs, cuda_graph=args.cuda_graph)
    print(f"N={args.n} d={args.d} K={args.k} epochs={cfg.epochs} batch={cfg.batch_size} tau={cfg.tau}")

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return out, best

    # Warm-up outside the timings: one-off costs (the optimiser's first use imports torch._dynamo,
    # CUDA context and cuBLAS handles) would otherwise land on whichever loop runs first.
    warm = HeadTrainingConfig.for_clusters(args.k, epochs=1, cuda_graph=args.cuda_graph)
    small = min(args.n, 4 * warm.batch_size)
    train_heads(
        v[:small], t[:small], knn_v[:small] % small, knn_t[:small] % small, args.k, warm, device=device
    )
    if not args.skip_original:
        train_original(
            v[:small], t[:small], knn_v[:small] % small, knn_t[:small] % small, args.k, warm, device
        )

    (f, _, _), engine_s = timed(lambda: train_heads(v, t, knn_v, knn_t, args.k, cfg, seed=0, device=device))
    acc = cluster_metrics(y, predict_proba(f, v).argmax(1))["acc"]
    print(f"engine:   {engine_s:8.2f} s   ACC {acc:5.1f}")
    if args.skip_original:
        return
    (f0, _), original_s = timed(lambda: train_original(v, t, knn_v, knn_t, args.k, cfg, device))
    acc0 = cluster_metrics(y, predict_proba(f0, v).argmax(1))["acc"]
    print(f"original: {original_s:8.2f} s   ACC {acc0:5.1f}")
    print(f"ratio original / engine: {original_s / engine_s:.2f}x")


if __name__ == "__main__":
    main()
