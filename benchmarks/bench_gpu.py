"""GPU counting benchmark: the counting benchmark's tensor counter on CUDA at n = 10^8.

Codes are generated on the GPU (``bench_counting.synthetic_codes``) and counted there
with ``JointCounter`` + ``summarize``. The figure is the achieved input bandwidth,
(code bytes as uint8 + label bytes as int64) / seconds, next to the card's
device-to-device copy bandwidth measured with ``torch.Tensor.copy_`` on 1 GiB,
counted as bytes read plus bytes written per second.

Without a CUDA device the script records "no GPU here" and exits with 0.
``--device cpu`` runs the same code on the CPU, which checks the script itself.

    python -m benchmarks.bench_gpu
    python -m benchmarks.bench_gpu --quick --device cpu
"""

from __future__ import annotations

import sys

import torch

from .bench_counting import KINDS, count_with_counter, parse_sizes, synthetic_codes
from .common import Stopwatch, apply_threads, base_parser, check_positive, machine_info, median, write_result

FULL_N = 10**8
QUICK_N = 10**5
COPY_BYTES = 1 << 30
QUICK_COPY_BYTES = 1 << 24
DEFAULT_BATCH_ROWS = 1 << 24


def copy_bandwidth(device: torch.device, size: int, repeats: int) -> dict:
    """Measure the copy bandwidth of ``device`` as (read + written bytes) per second, median of repeats."""
    source = torch.empty(size, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    stopwatch = Stopwatch(device)
    target.copy_(source)
    seconds = [stopwatch.time(target.copy_, source)[0] for _ in range(repeats)]
    return {"bytes": size, "seconds": seconds, "bytes_per_second": 2 * size / median(seconds)}


def measure_kind(kind: str, n: int, device: torch.device, repeats: int, batch_rows: int, seed: int) -> dict:
    """Count n synthetic codes of ``kind`` on ``device``; return seconds and the achieved input bandwidth."""
    alphabet_size = KINDS[kind]["alphabet_size"]
    codes, labels = synthetic_codes(kind, n, seed=seed, device=device)
    stopwatch = Stopwatch(device)
    # One small warm-up run loads the kernels, so the timed runs measure counting only.
    stopwatch.time(count_with_counter, codes[: min(n, 1 << 16)], labels[: min(n, 1 << 16)], alphabet_size, batch_rows)
    seconds = []
    distinct = None
    for _ in range(repeats):
        elapsed, counted = stopwatch.time(count_with_counter, codes, labels, alphabet_size, batch_rows)
        seconds.append(elapsed)
        distinct = int(counted["codes"].shape[0])
    input_bytes = codes.numel() * codes.element_size() + labels.numel() * labels.element_size()
    middle = median(seconds)
    figure = {
        "kind": kind,
        "n": n,
        "distinct_codes": distinct,
        "repeats": repeats,
        "seconds": seconds,
        "counter_seconds": middle,
        "codes_per_second": n / middle,
        "input_bytes": input_bytes,
        "input_bytes_per_second": input_bytes / middle,
    }
    if device.type == "cuda":
        figure["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    del codes, labels
    return figure


def build_parser():
    parser = base_parser("gpu", "Count 10^8 synthetic codes on a CUDA GPU and compare the achieved bandwidth with the card's copy bandwidth.")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available, else record that no GPU is here)")
    parser.add_argument("--n", help=f"codes per kind (default {FULL_N:.0e}, --quick {QUICK_N:.0e})")
    parser.add_argument("--kinds", default="p3_k26", help=f"comma-separated code kinds out of {', '.join(KINDS)} (default p3_k26)")
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help=f"rows per JointCounter.update (default {DEFAULT_BATCH_ROWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic codes (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    check_positive(parser, "--repeats", args.repeats)
    check_positive(parser, "--batch-rows", args.batch_rows)
    kinds = [kind.strip() for kind in args.kinds.split(",")]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        parser.error(f"invalid --kinds {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if args.n:
        n = parse_sizes(parser, args.n)[0]
    else:
        n = QUICK_N if args.quick else FULL_N
    repeats = args.repeats or (2 if args.quick else 5)

    if args.device is None and not torch.cuda.is_available():
        payload = {"title": "GPU counting", "quick": args.quick, "machine": machine_info("cpu"), "status": "no GPU here", "figures": [], "targets": []}
        path = write_result("gpu", args.out, payload)
        print(f"no GPU here (torch.cuda.is_available() is False); wrote {path}")
        return 0
    try:
        device = torch.device(args.device or "cuda")
    except RuntimeError as error:
        parser.error(f"invalid --device {args.device!r}: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} requested but torch sees no CUDA GPU; run without --device to record that")

    copy = copy_bandwidth(device, QUICK_COPY_BYTES if args.quick else COPY_BYTES, repeats=max(repeats, 5))
    print(f"{device}: copy bandwidth {copy['bytes_per_second'] / 1e9:.1f} GB/s (read + write)", flush=True)
    figures = []
    for kind in kinds:
        figure = measure_kind(kind, n, device, repeats, args.batch_rows, args.seed)
        figure["fraction_of_copy_bandwidth"] = figure["input_bytes_per_second"] / copy["bytes_per_second"]
        figures.append(figure)
        print(
            f"{kind:>10} n={n:,}: {figure['counter_seconds']:.3f} s, {figure['codes_per_second'] / 1e6:.1f} M codes/s, "
            f"{figure['input_bytes_per_second'] / 1e9:.2f} GB/s input = {figure['fraction_of_copy_bandwidth']:.1%} of the copy bandwidth",
            flush=True,
        )
    payload = {
        "title": "GPU counting",
        "quick": args.quick,
        "machine": machine_info(device),
        "status": "measured on CUDA" if device.type == "cuda" else f"measured on {device} (a check of the script, not a GPU figure)",
        "settings": {"n": n, "kinds": kinds, "batch_rows": args.batch_rows, "repeats": repeats, "seed": args.seed},
        "copy_bandwidth": copy,
        "figures": figures,
        "targets": [],
    }
    path = write_result("gpu", args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
