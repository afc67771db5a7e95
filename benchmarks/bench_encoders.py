"""Encoder throughput: images/s end to end (decode + preprocess + embed) and seconds for the noun ensemble.

Measures, with the encoder of your choice:

1. 32×32 PNGs (CIFAR-sized) and 500×375 JPEGs (ImageNet-sized) through ``encode_drop``: worker processes
   decode and preprocess, the model embeds as batches arrive. Also decode-only and model-only rates, to show
   which side limits.
2. All WordNet nouns × the 7 prompt templates through ``encode_nouns`` (tokenisation included), from
   ``--nouns-file`` (one noun per line), else the WordNet vocabulary if it can be loaded offline, else
   synthetic nouns of WordNet-like length.

    python -m benchmarks.bench_encoders --model tac-tiny                      # CPU smoke numbers
    python -m benchmarks.bench_encoders --model ViT-B-32 --pretrained none    # GPU: random init, same speed

Targets on an H100/H200: ≥ 5,000 images/s for CIFAR-sized PNGs, the noun ensemble in ≤ 20 s.
Not a test. Heavy imports live in the functions: the decoding workers re-import this module
(spawn/forkserver).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.inputs import WORDNET_NOUNS, synthetic_nouns, wordnet_vocabulary, write_images


def load_nouns(args: argparse.Namespace) -> tuple[list[str], str]:
    if args.nouns_file:
        nouns = [line.rstrip("\n") for line in Path(args.nouns_file).read_text(encoding="utf-8").splitlines()]
        return [n for n in nouns if n][: args.nouns], f"file {args.nouns_file}"
    try:
        frame = wordnet_vocabulary(args.data_dir)
        return list(dict.fromkeys(frame["noun"]))[: args.nouns], "WordNet"  # each distinct word once
    except Exception as exc:  # no WordNet here: synthetic strings of realistic length
        print(
            f"(WordNet unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}; synthetic nouns)"
        )
        return synthetic_nouns(args.nouns), "synthetic"


def bench_images(encoder, paths: list[Path], workers: int | None, label: str) -> dict:
    import torch

    from tac_pipeline.encoders import ImageRecord, encode_drop, read_images

    records = [ImageRecord(image_id=p.name, path=p) for p in paths]
    # decode only (workers, uint8 out)
    start = time.perf_counter()
    reader = read_images(records, encoder.preprocess, num_workers=workers, output="uint8")
    n = sum(len(b.indices) for b in reader)
    decode_rate = n / (time.perf_counter() - start)
    # model only (random uint8 pixels already in memory)
    size = encoder.image_size
    pixels = torch.randint(
        0, 256, (min(len(paths), 4 * encoder.batch_size), 3, size, size), dtype=torch.uint8
    )
    encoder.encode_images(pixels[: encoder.batch_size])  # warm-up
    start = time.perf_counter()
    encoder.encode_images(pixels)
    model_rate = len(pixels) / (time.perf_counter() - start)
    # end to end
    out = encode_drop(encoder, records, num_workers=workers)
    assert len(out.image_ids) == len(paths) and not out.skipped, out.skipped[:3]
    return {
        "what": label,
        "images": len(paths),
        "end_to_end_images_per_s": round(out.images_per_second, 1),
        "end_to_end_seconds": round(out.seconds, 2),
        "decode_only_images_per_s": round(decode_rate, 1),
        "model_only_images_per_s": round(model_rate, 1),
        "workers": reader.num_workers,
    }


def bench_nouns(encoder, nouns: list[str], source: str, full_count: int) -> dict:
    from tac_pipeline.encoders import NOUN_TEMPLATES
    from tac_pipeline.encoders.clip.tokens import PromptTokens

    encoder.encode_nouns(nouns[:256])  # warm-up
    start = time.perf_counter()
    prompts = PromptTokens(encoder.tokenizer, nouns, NOUN_TEMPLATES, encoder.context_length)
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    emb = encoder.encode_nouns(nouns)
    seconds = time.perf_counter() - start
    assert emb.shape == (len(nouns), encoder.embedding_dim)
    return {
        "what": f"{len(nouns):,} nouns x {len(NOUN_TEMPLATES)} templates ({source})",
        "prompts": len(nouns) * len(NOUN_TEMPLATES),
        "seconds": round(seconds, 2),
        "of_which_tokenising_s": round(tokenize_s, 2),
        "composed_prompts": len(prompts) - len(prompts.full),
        "mean_tokens_per_prompt": round(float(prompts.lengths.mean()), 1),
        "prompts_per_s": round(len(nouns) * len(NOUN_TEMPLATES) / seconds, 1),
        f"extrapolated_seconds_for_{full_count}": round(seconds * full_count / len(nouns), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tac-tiny")
    parser.add_argument("--pretrained", default="none", help="tag, or none for random init (same speed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1)")
    parser.add_argument("--png", type=int, default=2000, help="how many 32x32 PNGs")
    parser.add_argument("--jpeg", type=int, default=500, help="how many 500x375 JPEGs")
    parser.add_argument(
        "--nouns",
        type=int,
        default=WORDNET_NOUNS,
        help="how many distinct nouns (119,034: every WordNet 3.0 noun lemma)",
    )
    parser.add_argument(
        "--nouns-file", default=None, help="one noun per line (default: WordNet or synthetic)"
    )
    parser.add_argument("--data-dir", default=None, help="data root holding the WordNet cache")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    import torch

    from tac_pipeline.encoders import ClipEncoder

    encoder = ClipEncoder.from_pretrained(
        args.model, args.pretrained, device=args.device, batch_size=args.batch_size
    )
    header = {
        "encoder": repr(encoder),
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "trimmed_text_context": encoder.uses_trimmed_text_context,
    }
    print(json.dumps(header, indent=1))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
        if args.png:
            paths = write_images(Path(tmp) / "png", args.png, (32, 32), "PNG")
            results.append(bench_images(encoder, paths, args.workers, "32x32 PNG"))
            print(json.dumps(results[-1]))
        if args.jpeg:
            paths = write_images(Path(tmp) / "jpeg", args.jpeg, (500, 375), "JPEG")
            results.append(bench_images(encoder, paths, args.workers, "500x375 JPEG"))
            print(json.dumps(results[-1]))
    if args.nouns:
        nouns, source = load_nouns(args)
        results.append(bench_nouns(encoder, nouns, source, WORDNET_NOUNS))
        print(json.dumps(results[-1]))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
