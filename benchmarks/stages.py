"""The stage sections of :mod:`benchmarks.run`: images, nouns, kmeans, knn and heads.

kmeans, knn and heads run on synthetic 512-wide unit vectors (ViT-B-32's width), whatever the model. Heavy
imports live inside the functions: the image-decoding workers re-import the running module.
"""

from __future__ import annotations

import time

from benchmarks.harness import FLOORS, N_CLASSES, WIDTH, Bench, Row
from benchmarks.inputs import WORDNET_NOUNS, synthetic_nouns, write_images


def bench_images(b: Bench) -> list[Row]:
    import torch

    from tac_pipeline.encoders import ImageRecord, discover_images, encode_drop, read_images

    enc = b.encoder()
    size = enc.image_size
    enc.encode_images(torch.zeros((enc.batch_size, 3, size, size), dtype=torch.uint8))  # warm-up
    n_train = b.scale.png * 5 // 6
    png = discover_images(b.drop(n_train, b.scale.png - n_train)).records
    jpeg_paths = write_images(b.work / "jpeg224", b.scale.jpeg, (224, 224), "JPEG", distinct=256)
    jpeg = [ImageRecord(image_id=p.name, path=p) for p in jpeg_paths]
    rows = []

    def end_to_end(records, label: str, target_key: str | None = None) -> Row:
        out, seconds, peak = b.measure(lambda: encode_drop(enc, records, num_workers=b.args.workers))
        assert len(out.image_ids) == len(records) and not out.skipped, out.skipped[:3]
        rate = len(records) / seconds
        target, met = b.judge(target_key, rate) if target_key else ("", "")
        return Row(
            "images",
            f"{label}, end to end (`encode_drop`)",
            f"{rate:,.0f}/s",
            seconds=seconds,
            rate=rate,
            target=target,
            met=met,
            peak_gpu_bytes=peak,
            notes=f"{len(records):,} images in {seconds:.1f} s, decoding workers started included",
        )

    rows.append(end_to_end(png, "32×32 PNG", "png"))
    rows.append(end_to_end(jpeg, "224-px JPEG"))

    reader = read_images(
        png, enc.preprocess_spec or enc.preprocess, num_workers=b.args.workers, output="uint8"
    )
    n, seconds, _ = b.measure(lambda: sum(len(batch.indices) for batch in reader))
    rows.append(
        Row(
            "images",
            f"32×32 PNG, decode + resize only ({reader.num_workers} decoding process"
            + ("es)" if reader.num_workers != 1 else ")"),
            f"{n / seconds:,.0f}/s",
            seconds=seconds,
            rate=n / seconds,
            notes=f"{n:,} images to {size}-px uint8; plain-code floor: {FLOORS['decode_only']}",
        )
    )
    pixels = torch.randint(0, 256, (min(len(png), 16 * enc.batch_size), 3, size, size), dtype=torch.uint8)
    if b.cuda:
        pixels = pixels.pin_memory()
    _, seconds, peak = b.measure(lambda: enc.encode_images(pixels))
    rows.append(
        Row(
            "images",
            f"image tower only ({size}-px uint8 batches from host memory)",
            f"{len(pixels) / seconds:,.0f}/s",
            seconds=seconds,
            rate=len(pixels) / seconds,
            peak_gpu_bytes=peak,
            notes=f"{len(pixels):,} images, batch {enc.batch_size}, {enc.precision}; plain-code floor: "
            + FLOORS["model_only"],
        )
    )
    return rows


def bench_nouns(b: Bench) -> list[Row]:
    from tac_pipeline.encoders import NOUN_TEMPLATES

    enc = b.encoder()
    frame, source = b.vocabulary()
    nouns = list(dict.fromkeys(frame["noun"]))[: b.scale.nouns]  # each distinct word once, as the asset does
    if len(nouns) < b.scale.nouns:
        nouns += synthetic_nouns(b.scale.nouns - len(nouns), seed=1)
    enc.encode_nouns(nouns[:256])  # warm-up
    notes = [source]
    try:  # tokenising alone, through the encoder's private helper (left out if it moved)
        from tac_pipeline.encoders.clip.tokens import PromptTokens

        start = time.perf_counter()
        prompts = PromptTokens(enc.tokenizer, nouns, NOUN_TEMPLATES, enc.context_length)
        notes.append(
            f"tokenising alone {time.perf_counter() - start:.1f} s, {prompts.lengths.mean():.1f} tokens/prompt"
        )
    except Exception:
        pass
    emb, seconds, peak = b.measure(lambda: enc.encode_nouns(nouns))
    assert emb.shape == (len(nouns), enc.embedding_dim)
    n_prompts = len(nouns) * len(NOUN_TEMPLATES)
    notes.append(f"{n_prompts / seconds:,.0f} prompts/s")
    if len(nouns) != WORDNET_NOUNS:
        notes.append(f"{seconds * WORDNET_NOUNS / len(nouns):.1f} s extrapolated to {WORDNET_NOUNS:,}")
    target, met = b.judge("nouns", seconds)
    return [
        Row(
            "nouns",
            f"{len(nouns):,} nouns × {len(NOUN_TEMPLATES)} prompts (`encode_nouns`)",
            f"{seconds:.2f} s",
            seconds=seconds,
            target=target,
            met=met,
            peak_gpu_bytes=peak,
            notes="; ".join(notes),
        )
    ]


def bench_kmeans(b: Bench) -> list[Row]:
    from tac_pipeline.tac import DEFAULTS, semantic_center_count, spherical_kmeans

    v, _, _ = b.vectors()
    k_c = semantic_center_count(len(v), N_CLASSES)
    spherical_kmeans(v[:2_000], 10, n_iter=5, n_restarts=1, device=b.device, backend=b.args.backend)
    _, seconds, peak = b.measure(
        lambda: spherical_kmeans(
            v,
            k_c,
            n_iter=DEFAULTS.kmeans_iter,
            n_restarts=DEFAULTS.kmeans_restarts,
            seed=DEFAULTS.seed,
            device=b.device,
            backend=b.args.backend,
        )
    )
    return [
        Row(
            "kmeans",
            f"semantic centres: {len(v):,} × {WIDTH} → {k_c} centres (`spherical_kmeans`)",
            f"{seconds:.2f} s",
            seconds=seconds,
            peak_gpu_bytes=peak,
            notes=f"≤ {DEFAULTS.kmeans_iter} iterations, best of {DEFAULTS.kmeans_restarts}; "
            f"backend {b.backend_name()}",
        )
    ]


def bench_knn(b: Bench) -> list[Row]:
    from tac_pipeline.tac import knn_inner_product

    v, t, _ = b.vectors()
    knn_inner_product(v[:2_000], 50, device=b.device, backend=b.args.backend)  # warm-up
    rows, tables = [], []
    for name, x in (("images", v), ("counterparts", t)):
        table, seconds, peak = b.measure(
            lambda x=x: knn_inner_product(x, 50, device=b.device, backend=b.args.backend)
        )
        tables.append(table)
        rows.append(
            Row(
                "knn",
                f"k = 50 neighbours of {len(x):,} {name} (`knn_inner_product`)",
                f"{seconds:.2f} s",
                seconds=seconds,
                peak_gpu_bytes=peak,
                notes=f"exact; backend {b.backend_name()}",
            )
        )
    b._knn = tuple(tables)  # the heads section trains on them
    return rows


def bench_heads(b: Bench) -> list[Row]:
    from tac_pipeline.tac import HeadTrainingConfig, cluster_metrics, predict_proba, train_heads

    v, t, y = b.vectors()
    knn_v, knn_t = b.knn_tables()
    rows = []
    for cuda_graph in [False, True] if b.cuda else [False]:
        # Warm-up outside the timing (CUDA context, cuBLAS, the optimiser's first use, graph capture).
        warm = HeadTrainingConfig.for_clusters(N_CLASSES, epochs=1, cuda_graph=cuda_graph)
        m = min(len(v), 4 * warm.batch_size)
        train_heads(v[:m], t[:m], knn_v[:m] % m, knn_t[:m] % m, N_CLASSES, warm, device=b.device)
        cfg = HeadTrainingConfig.for_clusters(N_CLASSES, cuda_graph=cuda_graph)
        (head, _, _), seconds, peak = b.measure(
            lambda cfg=cfg: train_heads(v, t, knn_v, knn_t, N_CLASSES, cfg, seed=0, device=b.device)
        )
        acc = cluster_metrics(y, predict_proba(head, v).argmax(1))["acc"]
        target, met = b.judge("heads", seconds)
        mode = "one step captured as a CUDA graph" if cuda_graph else "eager"
        rows.append(
            Row(
                "heads",
                f"`train_heads` N = {len(v):,}, K = {N_CLASSES}, {cfg.epochs} epochs ({mode})",
                f"{seconds:.2f} s",
                seconds=seconds,
                target=target,
                met=met,
                peak_gpu_bytes=peak,
                notes=f"batch {cfg.batch_size}; ACC {acc:.1f} % on the synthetic classes",
            )
        )
    return rows
