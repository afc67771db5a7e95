"""Spec §7: the two cluster heads, the three losses as the authors' code computes them, and a
vectorised training loop.

The training loop keeps the fitting set and both kNN tables on the device, draws batches and
neighbours with torch ops, and never synchronises with the host inside an epoch: no DataLoader,
no per-sample Python, no ``.item()`` per step. Losses are accumulated in a device tensor and read
back once per epoch.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tac_pipeline.common.devices import ArrayLike, DeviceLike, as_tensor, resolve_device

from .params import DEFAULTS, LARGE_K_FROM, LARGE_K_TRAINING, SMALL_K_TRAINING
from .validation import validate_embeddings


class ClusterHead(nn.Sequential):
    """Linear(d, d) -> BatchNorm1d(d) -> ReLU -> Linear(d, K) -> Softmax, as in the original.

    Input (B, d) embeddings, output (B, K) cluster probabilities. Both Linear weights are drawn
    from a truncated normal with std 0.02 (bounds +-2, as timm's ``trunc_normal_``); biases keep
    PyTorch's default initialisation. The state-dict keys (``0.weight`` ... ``3.bias``) match
    the original's ``cluster_head_image`` / ``cluster_head_text`` sub-modules.
    """

    def __init__(self, in_dim: int, n_clusters: int):
        super().__init__(
            nn.Linear(in_dim, in_dim),
            nn.BatchNorm1d(in_dim),
            nn.ReLU(),
            nn.Linear(in_dim, n_clusters),
            nn.Softmax(dim=1),
        )
        self.in_dim = in_dim
        self.n_clusters = n_clusters
        nn.init.trunc_normal_(self[0].weight, std=0.02)
        nn.init.trunc_normal_(self[3].weight, std=0.02)


# --------------------------------------------------------------------------------------------
# Losses (each takes cluster probabilities, i.e. the heads' softmax outputs)
# --------------------------------------------------------------------------------------------


def _self_mask(k: int, device: torch.device) -> torch.Tensor:
    """(2K, 2K) boolean mask of the diagonal: a column is never its own negative."""
    return torch.eye(2 * k, dtype=torch.bool, device=device)


def _distillation(a: torch.Tensor, b: torch.Tensor, tau: float, self_mask: torch.Tensor) -> torch.Tensor:
    k = a.shape[-1]
    n = 2 * k
    # (..., 2K, B): one row per cluster column of A, then of B, each L2-normalised.
    c = F.normalize(torch.cat([a.transpose(-2, -1), b.transpose(-2, -1)], dim=-2), dim=-1)
    sim = c @ c.transpose(-2, -1) / tau
    # Positive of row i is row (i + K) mod 2K: the two off-diagonals at +-K, as views.
    positive = torch.cat(
        [sim.diagonal(offset=k, dim1=-2, dim2=-1), sim.diagonal(offset=-k, dim1=-2, dim2=-1)], dim=-1
    )
    others = sim.masked_fill(self_mask, float("-inf"))
    return (torch.logsumexp(others, dim=-1) - positive).sum() / n


def distillation_loss(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Cluster-level contrastive distillation D(A, B) of the original ``DistillLoss``.

    The K columns of A (B_size, K) and of B (B_size, K) are L2-normalised; (A_k, B_k) is the
    positive pair among the 2K columns; each column is classified against the 2K-1 others by
    cross-entropy on similarities / tau; the 2K terms are summed and divided by 2K.

    Written as logsumexp over the other columns minus the positive logit, which is the same
    cross-entropy as the original's [positive, negatives] logits with label 0. Inputs with a
    leading batch dimension, (S, B_size, K), give the sum of the S losses (the training loop
    evaluates D(p, q^N) + D(q, p^N) in one call). Returns a scalar tensor.
    """
    return _distillation(a, b, tau, _self_mask(a.shape[-1], a.device))


def consistency_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log(p_i . q_i), via ``F.binary_cross_entropy`` against 1 as the
    original computes it (so the log is clamped at -100 and the gradient matches torch's BCE).

    p, q: (B, K) probabilities. The clamp at 1 only guards rounding just above 1, which BCE would
    reject; it leaves every valid value and its gradient unchanged. Returns a scalar tensor.
    """
    dot = (p * q).sum(dim=1).clamp(max=1.0)
    # A NaN row (a diverged step) would make BCE raise on the CPU and fail a device assertion on CUDA. It
    # scores as 1 instead, and the loss turns NaN through a detached zero term (exactly + 0 otherwise), so
    # ``train_heads`` reports the divergence with the settings to change.
    loss = F.binary_cross_entropy(dot.nan_to_num(nan=1.0), torch.ones_like(dot))
    return loss + dot.detach().sum() * 0


def _entropy_of_mean(p: torch.Tensor) -> torch.Tensor:
    mean = p.mean(dim=0).clamp(min=1e-9)
    return -(mean * torch.log(mean)).sum()


def balance_loss(p: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of the batch-mean cluster distribution, H(mean p) (+ H(mean q) when q is given).

    Probabilities are clamped at 1e-9 before the log, as in the original ``entropy``. The total
    loss subtracts this term (weight 5), so training maximises it and keeps clusters balanced.
    p, q: (B, K). Returns a scalar tensor; L_bal of the spec is ``balance_loss(p, q)``.
    """
    h = _entropy_of_mean(p)
    return h if q is None else h + _entropy_of_mean(q)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class HeadTrainingConfig:
    """Optimisation settings for the heads (spec §7); ``for_clusters`` applies the K rule.

    Attributes:
        epochs, batch_size, tau: 20 / 512 / 0.5 for K < 100; 100 / 8192 / 5.0 for K >= 100.
        lr, betas, weight_decay: Adam settings (1e-3, (0.9, 0.99), 0).
        entropy_weight: weight of L_bal in L = L_dis + L_con - w * L_bal (5).
        cuda_graph: on CUDA, capture one training step in a CUDA graph and replay it (removes
            per-step launch overhead). Ignored on CPU. Experimental: off by default.
    """

    epochs: int = SMALL_K_TRAINING["epochs"]
    batch_size: int = SMALL_K_TRAINING["batch_size"]
    tau: float = SMALL_K_TRAINING["tau"]
    lr: float = DEFAULTS.lr
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    entropy_weight: float = DEFAULTS.entropy_weight
    cuda_graph: bool = False

    @classmethod
    def for_clusters(cls, n_clusters: int, **overrides) -> HeadTrainingConfig:
        """Spec defaults for K clusters (``TacParams.head_training``); keyword overrides that are None are
        ignored."""
        values: dict = DEFAULTS.head_training(n_clusters)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if not (math.isfinite(self.tau) and self.tau > 0 and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"tau and lr must be finite and > 0, got {self.tau} and {self.lr}")
        if not (math.isfinite(self.entropy_weight) and self.entropy_weight >= 0):
            raise ValueError(f"entropy_weight must be finite and >= 0, got {self.entropy_weight}")


class TrainingDivergedError(ValueError):
    """Head training produced a non-finite loss or weights; the message names the settings to change."""


def _check_finite(epoch: int, cfg: HeadTrainingConfig, losses: list[float], weights_finite: bool) -> None:
    if weights_finite and all(math.isfinite(x) for x in losses):
        return
    what = "the loss" if not all(math.isfinite(x) for x in losses) else "the heads' weights"
    l_dis, l_con, l_bal = losses
    raise TrainingDivergedError(
        f"head training diverged in epoch {epoch + 1} of {cfg.epochs}: {what} is not finite "
        f"(L_dis {l_dis:.4g}, L_con {l_con:.4g}, L_bal {l_bal:.4g}). The step size or a temperature is out of "
        f"proportion: lower lr (now {cfg.lr:g}), raise tau (now {cfg.tau:g}) or lower entropy_weight "
        f"(now {cfg.entropy_weight:g}); the defaults are lr {DEFAULTS.lr:g}, tau {SMALL_K_TRAINING['tau']:g} "
        f"(K < {LARGE_K_FROM}) or {LARGE_K_TRAINING['tau']:g}, entropy_weight {DEFAULTS.entropy_weight:g}"
    )


@dataclass
class TrainingHistory:
    """Per-epoch means of the losses over that epoch's steps (one entry per epoch).

    ``total`` is L = L_dis + L_con - entropy_weight * L_bal; ``seconds`` the epoch wall time.
    """

    distillation: list[float] = field(default_factory=list)
    consistency: list[float] = field(default_factory=list)
    balance: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    batch_size: int = 0

    def __len__(self) -> int:
        return len(self.total)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_knn(knn: ArrayLike, n: int, name: str) -> torch.Tensor:
    table = as_tensor(knn, "cpu", dtype=torch.int64)
    if table.ndim != 2 or table.shape[0] != n or table.shape[1] < 1:
        raise ValueError(
            f"{name}: expected an (N={n}, k>=1) table of neighbour indices, got {tuple(table.shape)}"
        )
    if int(table.min()) < 0 or int(table.max()) >= n:
        raise ValueError(
            f"{name}: neighbour indices must lie in [0, {n}), got [{int(table.min())}, {int(table.max())}]"
        )
    return table


def train_heads(
    image_embeddings: ArrayLike,
    counterparts: ArrayLike,
    knn_image: ArrayLike,
    knn_text: ArrayLike,
    n_clusters: int,
    config: HeadTrainingConfig | None = None,
    *,
    seed: int = 0,
    device: DeviceLike = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[ClusterHead, ClusterHead, TrainingHistory]:
    """Train the image head f and the text head g on the fitting split (spec §7).

    Each step: a batch B of a per-epoch permutation (last partial batch dropped; a batch larger
    than N is shrunk to N), one neighbour per anchor drawn uniformly from its image kNN list and
    one, independently, from its text kNN list;
    p = f(v_B), q = g(t_B), p^N = f(v_nbr_img), q^N = g(t_nbr_txt) as four separate forward calls
    (BatchNorm statistics per call, as in the original);
    L = D(p, q^N) + D(q, p^N) + L_con(p, q) - w * (H(mean p) + H(mean q)); one Adam step.

    Random draws come from one seeded ``torch.Generator`` on the device: each epoch draws its
    permutation and all of its steps' neighbour picks at once (independent, fresh for every step).

    Args:
        image_embeddings: (N, d) v of the fitting split.
        counterparts: (N, d) t, their text counterparts.
        knn_image: (N, k_v) int neighbour indices in image space (self excluded).
        knn_text: (N, k_t) int neighbour indices in counterpart space.
        n_clusters: K >= 2.
        config: optimisation settings; default ``HeadTrainingConfig.for_clusters(K)``.
        seed: initialisation and sampling seed (deterministic on CPU).
        device: where to train ("auto" = CUDA when available).
        callback: called after every epoch as ``callback(epoch, losses)``, epoch counted from 0,
            losses with keys distillation, consistency, balance, total, seconds.

    Returns:
        (image_head, text_head, history); heads on ``device`` in eval mode.
    """
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
    cfg = config if config is not None else HeadTrainingConfig.for_clusters(n_clusters)
    dev = resolve_device(device)
    v = as_tensor(validate_embeddings(as_tensor(image_embeddings), "image embeddings"), dev)
    t = as_tensor(validate_embeddings(as_tensor(counterparts), "counterparts"), dev)
    if v.shape != t.shape:
        raise ValueError(
            f"image embeddings {tuple(v.shape)} and counterparts {tuple(t.shape)} differ in shape"
        )
    n, d = v.shape
    nbr_img = _check_knn(knn_image, n, "knn_image").to(dev)
    nbr_txt = _check_knn(knn_text, n, "knn_text").to(dev)
    batch = min(cfg.batch_size, n)
    if batch < cfg.batch_size:
        warnings.warn(f"batch_size {cfg.batch_size} exceeds the {n} fitting images; using {n}", stacklevel=2)
    if batch < 2:
        raise ValueError(f"need at least 2 images to train (BatchNorm needs a batch), got {n}")
    steps = n // batch

    # Same initial weights on every device: build on the CPU under a private copy of the RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_head = ClusterHead(d, n_clusters)  # created first, like the original's model
        image_head = ClusterHead(d, n_clusters)
    image_head.to(dev).train()
    text_head.to(dev).train()

    use_graph = cfg.cuda_graph and dev.type == "cuda"
    params = list(image_head.parameters()) + list(text_head.parameters())
    # On CUDA the fused Adam is one kernel for all parameters and keeps its step count on the
    # device (no host read per step); a CUDA graph additionally needs capturable=True.
    optimiser = torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=dev.type == "cuda",
        capturable=use_graph,
    )
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    totals = torch.zeros(3, device=dev)  # running sums of L_dis, L_con, L_bal over the epoch
    tau, weight = float(cfg.tau), float(cfg.entropy_weight)

    self_mask = _self_mask(n_clusters, dev)

    def step(idx: torch.Tensor, pick_img: torch.Tensor, pick_txt: torch.Tensor) -> None:
        nb_img = nbr_img[idx, pick_img]  # one uniform neighbour per anchor, gathered on device
        nb_txt = nbr_txt[idx, pick_txt]
        q = text_head(t[idx])
        p = image_head(v[idx])
        q_n = text_head(t[nb_txt])
        p_n = image_head(v[nb_img])
        # D(p, q^N) + D(q, p^N) as one batched evaluation: half the kernel launches.
        l_dis = _distillation(torch.stack([p, q]), torch.stack([q_n, p_n]), tau, self_mask)
        l_con = consistency_loss(q, p)
        l_bal = balance_loss(q, p)
        loss = l_dis + l_con - weight * l_bal
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        totals.add_(torch.stack([l_dis, l_con, l_bal]).detach())

    k_img, k_txt = nbr_img.shape[1], nbr_txt.shape[1]
    graph = static = None
    history = TrainingHistory(steps_per_epoch=steps, batch_size=batch)
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=dev)[: steps * batch].view(steps, batch)
        picks_img = torch.randint(0, k_img, (steps, batch), generator=gen, device=dev)
        picks_txt = torch.randint(0, k_txt, (steps, batch), generator=gen, device=dev)
        if use_graph and graph is None:
            static = (perm[0].clone(), picks_img[0].clone(), picks_txt[0].clone())
            graph = _capture_step(step, static, (image_head, text_head), optimiser)
        totals.zero_()
        for s in range(steps):
            if graph is not None:
                static[0].copy_(perm[s])
                static[1].copy_(picks_img[s])
                static[2].copy_(picks_txt[s])
                graph.replay()
            else:
                step(perm[s], picks_img[s], picks_txt[s])
        # The epoch's single host sync: its mean losses and whether every weight is still finite.
        weights_finite = torch.stack([x.detach().isfinite().all() for x in params]).all()
        *means, finite = torch.cat([totals / steps, weights_finite.to(totals.dtype)[None]]).tolist()
        _check_finite(epoch, cfg, means, bool(finite))
        l_dis, l_con, l_bal = means
        seconds = time.perf_counter() - started
        losses = {
            "distillation": l_dis,
            "consistency": l_con,
            "balance": l_bal,
            "total": l_dis + l_con - weight * l_bal,
            "seconds": seconds,
        }
        for key, value in losses.items():
            getattr(history, key).append(value)
        if callback is not None:
            callback(epoch, losses)
    image_head.eval()
    text_head.eval()
    return image_head, text_head, history


def _capture_step(step, static, modules, optimiser) -> torch.cuda.CUDAGraph:
    """Capture ``step(*static)`` (forward, backward, Adam) in a CUDA graph.

    Follows PyTorch's whole-network capture recipe: warm up on a side stream, set gradients to
    None so backward allocates them from the graph's pool, capture. The warm-up steps really
    update the model, so weights, BatchNorm buffers and Adam's state are restored afterwards and
    training starts from the same point as the eager loop.
    """
    tensors = [x for m in modules for x in itertools.chain(m.parameters(), m.buffers())]
    with torch.no_grad():
        saved = [x.detach().clone() for x in tensors]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimiser.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step(*static)
    with torch.no_grad():
        for x, s in zip(tensors, saved, strict=True):
            x.copy_(s)
        for state in optimiser.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()  # step count and both moments back to a fresh Adam
    return graph


@torch.no_grad()
def predict_proba(
    head: nn.Module, x: ArrayLike, *, batch_size: int = 8192, device: DeviceLike = None
) -> np.ndarray:
    """Cluster probabilities of a head in eval mode (BatchNorm running statistics).

    Args:
        head: a trained :class:`ClusterHead`.
        x: (N, d) embeddings (normalised here).
        device: where to run; None uses the head's device.

    Returns:
        (N, K) float32 numpy.
    """
    dev = next(head.parameters()).device if device is None else resolve_device(device)
    was_training = head.training
    head.to(dev).eval()
    xt = as_tensor(validate_embeddings(as_tensor(x), "embeddings"), dev)
    out = torch.cat([head(xt[i : i + batch_size]) for i in range(0, xt.shape[0], batch_size)])
    head.train(was_training)
    return out.cpu().numpy()
