"""Counting benchmark: whole-code and positional NPMI with the tensor counter against two baselines.

The counter (``probe.counting.JointCounter`` filled batch by batch, then
``probe.analysis.summarize``) is timed against

- the loop of the original analysis: for each distinct code row, an element-wise
  equality test over every sample and a label count, then the same for each
  (position, symbol). It costs about distinct codes x n comparisons, so it is
  measured only at small n and extrapolated from its cost per (distinct code x
  sample) to larger n;
- ``np.unique(axis=0)`` for the distinct rows plus a ``collections.Counter`` of
  (row index, label) pairs, with positional counts by ``np.bincount``.

Every method computes the same NPMI tables, and the script checks that their
counts agree. Codes are synthetic and seeded (see ``synthetic_codes``).

    python -m benchmarks.bench_counting
    python -m benchmarks.bench_counting --quick
"""

from __future__ import annotations

import collections
import sys

import numpy as np
import torch

from probe.analysis import summarize
from probe.counting import JointCounter

from .common import Stopwatch, apply_threads, base_parser, check_positive, machine_info, median, target, write_result

N_LABELS = 10
KINDS = {
    "p3_k26": {"positions": 3, "alphabet_size": 26, "title": "P=3 over K=26", "unique_max_n": 10**7},
    # Nearly every row is distinct, and the Counter of (row, label) pairs grows with them:
    # the process peaked at 1.9 GB RSS at n = 10^6, so 10^7 is left out by default.
    "p32_binary": {"positions": 32, "alphabet_size": 2, "title": "P=32 binary", "unique_max_n": 10**6},
}
FULL_SIZES = (10**4, 10**5, 10**6, 10**7)
QUICK_SIZES = (10**3, 10**4, 10**5)
# The original loop makes distinct codes x n comparisons, about 10^8 at n = 10^4.
FULL_LOOP_MAX_N = 10**4
QUICK_LOOP_MAX_N = 10**3
GENERATION_ROWS = 1 << 20
COUNTER_BATCH_ROWS = 1 << 20
TARGET_LOOP_SPEEDUP = 10_000
TARGET_CODES_PER_SECOND = 20e6


def synthetic_codes(kind: str, n: int, seed: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Return seeded codes [n, P] uint8 and labels [n] int64 with a label-dependent code distribution.

    Labels are uniform over 10 values. For ``p3_k26`` each position takes its label's
    prototype symbol with probability 1/2 and a uniform symbol otherwise. For
    ``p32_binary`` each bit is 1 with probability 0.2 or 0.8, fixed per (label,
    position). Rows are generated in pieces of 2^20 so that only the uint8 codes
    of all n rows are held at once.
    """
    spec = KINDS[kind]
    positions, alphabet_size = spec["positions"], spec["alphabet_size"]
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    table_generator = torch.Generator().manual_seed(seed + 1)
    prototypes = torch.randint(0, alphabet_size, (N_LABELS, positions), generator=table_generator).to(device)
    bit_probability = (0.2 + 0.6 * torch.randint(0, 2, (N_LABELS, positions), generator=table_generator)).to(device)

    codes = torch.empty((n, positions), dtype=torch.uint8, device=device)
    labels = torch.empty(n, dtype=torch.int64, device=device)
    for start in range(0, n, GENERATION_ROWS):
        rows = min(GENERATION_ROWS, n - start)
        piece_labels = torch.randint(0, N_LABELS, (rows,), generator=generator, device=device)
        if kind == "p32_binary":
            piece = torch.rand((rows, positions), generator=generator, device=device) < bit_probability[piece_labels]
        else:
            keep = torch.rand((rows, positions), generator=generator, device=device) < 0.5
            uniform = torch.randint(0, alphabet_size, (rows, positions), generator=generator, device=device)
            piece = torch.where(keep, prototypes[piece_labels], uniform)
        codes[start : start + rows] = piece.to(torch.uint8)
        labels[start : start + rows] = piece_labels
    return codes, labels


# -- the three methods -------------------------------------------------------------


def count_with_counter(codes: torch.Tensor, labels: torch.Tensor, alphabet_size: int, batch_rows: int = COUNTER_BATCH_ROWS) -> dict:
    """Compute whole-code and positional NPMI with JointCounter + summarize on the codes' device."""
    counter = JointCounter(codes.shape[1], alphabet_size, N_LABELS, device=codes.device)
    for start in range(0, codes.shape[0], batch_rows):
        counter.update(codes[start : start + batch_rows], labels[start : start + batch_rows])
    result = summarize(counter, np.arange(N_LABELS))
    return {"codes": result.whole.codes, "joint": result.whole.counts, "positional": result.positional.counts, "npmi": result.whole.npmi, "positional_npmi": result.positional.npmi}


def npmi_numpy(joint: np.ndarray) -> np.ndarray:
    """Compute NPMI of count tables [..., X, Y] in float64, with -1 for empty cells and 1 for a certain pair."""
    counts = joint.astype(np.float64)
    total = counts.sum(axis=(-2, -1), keepdims=True)
    count_x = counts.sum(axis=-1, keepdims=True)
    count_y = counts.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_joint = np.log(counts)
        pmi = log_joint + np.log(total) - np.log(count_x) - np.log(count_y)
        values = pmi / (np.log(total) - log_joint)
    values = np.where(counts == 0, -1.0, values)
    values = np.where((counts > 0) & (counts == total), 1.0, values)
    return np.clip(values, -1.0, 1.0)


def count_with_loop(codes: np.ndarray, labels: np.ndarray, alphabet_size: int) -> dict:
    """Compute whole-code and positional NPMI the way the original analysis counted: one scan per distinct code."""
    distinct = np.unique(codes, axis=0)
    joint = np.zeros((len(distinct), N_LABELS), dtype=np.int64)
    for index, code in enumerate(distinct):
        match = np.all(codes == code, axis=1)
        joint[index] = np.bincount(labels[match], minlength=N_LABELS)
    positions = codes.shape[1]
    positional = np.zeros((positions, alphabet_size, N_LABELS), dtype=np.int64)
    for position in range(positions):
        for symbol in range(alphabet_size):
            match = codes[:, position] == symbol
            positional[position, symbol] = np.bincount(labels[match], minlength=N_LABELS)
    return {"codes": distinct, "joint": joint, "positional": positional, "npmi": npmi_numpy(joint), "positional_npmi": npmi_numpy(positional)}


def count_with_numpy_unique(codes: np.ndarray, labels: np.ndarray, alphabet_size: int) -> dict:
    """Compute whole-code and positional NPMI with np.unique(axis=0) and a dictionary of (row, label) counts."""
    distinct, inverse = np.unique(codes, axis=0, return_inverse=True)
    pairs = collections.Counter(zip(inverse.reshape(-1).tolist(), labels.tolist()))
    keys = np.array(list(pairs.keys()), dtype=np.int64).reshape(-1, 2)
    joint = np.zeros((len(distinct), N_LABELS), dtype=np.int64)
    joint[keys[:, 0], keys[:, 1]] = np.fromiter(pairs.values(), dtype=np.int64, count=len(pairs))
    positions = codes.shape[1]
    cells = (np.arange(positions) * alphabet_size + codes.astype(np.int64)) * N_LABELS + labels[:, None]
    positional = np.bincount(cells.reshape(-1), minlength=positions * alphabet_size * N_LABELS).reshape(positions, alphabet_size, N_LABELS)
    return {"codes": distinct, "joint": joint, "positional": positional, "npmi": npmi_numpy(joint), "positional_npmi": npmi_numpy(positional)}


def check_agreement(reference: dict, other: dict, method: str) -> None:
    """Raise AssertionError when ``other`` counted different tables than ``reference``."""
    for key in ("codes", "joint", "positional"):
        if not np.array_equal(np.asarray(reference[key]), np.asarray(other[key])):
            raise AssertionError(f"{method}: {key} differ from the tensor counter's")
    for key in ("npmi", "positional_npmi"):
        if not np.allclose(reference[key], other[key], atol=1e-9):
            raise AssertionError(f"{method}: {key} differ from the tensor counter's")


# -- measurement --------------------------------------------------------------------


def measure_size(kind: str, n: int, repeats: int, loop_max_n: int, unique_max_n: int, batch_rows: int, seed: int) -> dict:
    """Time the methods on one synthetic set, interleaving them in each repeat."""
    alphabet_size = KINDS[kind]["alphabet_size"]
    codes, labels = synthetic_codes(kind, n, seed=seed)
    codes_np, labels_np = codes.numpy(), labels.numpy()
    stopwatch = Stopwatch("cpu")
    times = {"counter": [], "numpy_unique": [], "loop": []}
    distinct = None

    for _ in range(repeats):
        seconds, counted = stopwatch.time(count_with_counter, codes, labels, alphabet_size, batch_rows)
        times["counter"].append(seconds)
        distinct = int(counted["codes"].shape[0])
        if n <= unique_max_n:
            seconds, baseline = stopwatch.time(count_with_numpy_unique, codes_np, labels_np, alphabet_size)
            times["numpy_unique"].append(seconds)
            check_agreement(counted, baseline, "np.unique + Counter")
        if n <= loop_max_n:
            seconds, baseline = stopwatch.time(count_with_loop, codes_np, labels_np, alphabet_size)
            times["loop"].append(seconds)
            check_agreement(counted, baseline, "original loop")

    figure = {"kind": kind, "n": n, "distinct_codes": distinct, "repeats": repeats, "seconds": {key: value for key, value in times.items() if value}}
    figure["counter_seconds"] = median(times["counter"])
    figure["counter_codes_per_second"] = n / figure["counter_seconds"]
    if times["numpy_unique"]:
        figure["numpy_unique_seconds"] = median(times["numpy_unique"])
        figure["numpy_unique_codes_per_second"] = n / figure["numpy_unique_seconds"]
        figure["speedup_vs_numpy_unique"] = median(u / c for u, c in zip(times["numpy_unique"], times["counter"]))
    if times["loop"]:
        figure["loop_seconds"] = median(times["loop"])
        figure["loop_measured"] = True
        figure["speedup_vs_loop"] = median(loop / c for loop, c in zip(times["loop"], times["counter"]))
    return figure


def extrapolate_loop(figures: list[dict]) -> None:
    """Fill loop_seconds for sizes beyond the measured ones from the cost per (distinct code x sample).

    The cost comes from the largest measured size of the same kind. This is an
    estimate: it ignores the per-(position, symbol) scans, which grow only with n.
    """
    for kind in KINDS:
        measured = [figure for figure in figures if figure["kind"] == kind and figure.get("loop_measured")]
        if not measured:
            continue
        basis = max(measured, key=lambda figure: figure["n"])
        cost = basis["loop_seconds"] / (basis["distinct_codes"] * basis["n"])
        for figure in figures:
            if figure["kind"] == kind and not figure.get("loop_measured"):
                figure["loop_seconds"] = cost * figure["distinct_codes"] * figure["n"]
                figure["loop_measured"] = False
                figure["loop_extrapolated_from_n"] = basis["n"]
                figure["speedup_vs_loop"] = figure["loop_seconds"] / figure["counter_seconds"]


def build_targets(figures: list[dict]) -> list[dict]:
    """Return the loop speed-up target at n = 10^4 per kind and the P=3 rate target at n = 10^7."""
    targets = []
    for kind, spec in KINDS.items():
        at = next((figure for figure in figures if figure["kind"] == kind and figure["n"] == 10**4), None)
        record = target(
            f"counting.loop_speedup.{kind}",
            f"{spec['title']}, n = 10^4: counter at least {TARGET_LOOP_SPEEDUP:,} times faster than the original loop",
            None if at is None else at.get("speedup_vs_loop"),
            TARGET_LOOP_SPEEDUP,
            higher_is_better=True,
            unit="x",
        )
        if at is not None and not at.get("loop_measured", True):
            record["note"] = f"loop time extrapolated from n = {at['loop_extrapolated_from_n']:,}"
        targets.append(record)
    at = next((figure for figure in figures if figure["kind"] == "p3_k26" and figure["n"] == 10**7), None)
    targets.append(
        target(
            "counting.rate.p3_k26",
            f"P=3 over K=26, n = 10^7: at least {TARGET_CODES_PER_SECOND / 1e6:.0f} million codes per second on the CPU",
            None if at is None else at["counter_codes_per_second"],
            TARGET_CODES_PER_SECOND,
            higher_is_better=True,
            unit="codes/s",
        )
    )
    return targets


def build_parser():
    parser = base_parser("counting", "Time whole-code and positional NPMI with the tensor counter against the original loop and np.unique.")
    parser.add_argument("--sizes", help="comma-separated sample counts (default 10^4,10^5,10^6,10^7; --quick 10^3,10^4,10^5)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated code kinds out of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--loop-max-n", type=int, help=f"largest n at which the original loop is timed; beyond it, it is extrapolated (default {FULL_LOOP_MAX_N:,}, --quick {QUICK_LOOP_MAX_N:,})")
    parser.add_argument("--unique-max-n", type=int, help="largest n at which np.unique + Counter is timed (default 10^7 for p3_k26, 10^6 for p32_binary)")
    parser.add_argument("--batch-rows", type=int, default=COUNTER_BATCH_ROWS, help=f"rows per JointCounter.update (default {COUNTER_BATCH_ROWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic codes (default 0)")
    return parser


def parse_sizes(parser, text: str) -> list[int]:
    sizes = []
    for item in text.split(","):
        item = item.strip().replace("_", "")
        try:
            value = int(float(item)) if "e" in item.lower() else int(item)
        except ValueError:
            parser.error(f"invalid size {item!r} in --sizes; give integers such as 10000,1e6")
        if value < 1:
            parser.error(f"invalid size {value} in --sizes; it must be at least 1")
        sizes.append(value)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    for option in ("repeats", "loop_max_n", "unique_max_n", "batch_rows"):
        check_positive(parser, "--" + option.replace("_", "-"), getattr(args, option))
    kinds = [kind.strip() for kind in args.kinds.split(",")]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        parser.error(f"invalid --kinds {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if args.sizes:
        sizes = parse_sizes(parser, args.sizes)
    else:
        sizes = list(QUICK_SIZES) if args.quick else list(FULL_SIZES)
    repeats = args.repeats or (2 if args.quick else 5)
    loop_max_n = args.loop_max_n or (QUICK_LOOP_MAX_N if args.quick else FULL_LOOP_MAX_N)

    figures = []
    for kind in kinds:
        # The loop is also timed below the smallest size so that there is a basis to extrapolate from.
        unique_max_n = args.unique_max_n or KINDS[kind]["unique_max_n"]
        for n in sorted(set(sizes) | {min(loop_max_n, min(sizes))}):
            figure = measure_size(kind, n, repeats, loop_max_n, unique_max_n, args.batch_rows, args.seed)
            figure["reported"] = n in sizes
            figures.append(figure)
            print(f"{kind:>10} n={n:>10,}  distinct {figure['distinct_codes']:>9,}  counter {figure['counter_seconds'] * 1e3:10.2f} ms  {figure['counter_codes_per_second'] / 1e6:8.2f} M codes/s", flush=True)
    extrapolate_loop(figures)
    for figure in figures:
        loop = "measured" if figure.get("loop_measured") else "extrapolated"
        print(f"{figure['kind']:>10} n={figure['n']:>10,}  vs np.unique {figure.get('speedup_vs_numpy_unique', float('nan')):8.1f}x  vs loop ({loop}) {figure.get('speedup_vs_loop', float('nan')):12.1f}x")
    payload = {
        "title": "Counting: tensor counter against the original loop and np.unique",
        "quick": args.quick,
        "machine": machine_info("cpu"),
        "settings": {"labels": N_LABELS, "batch_rows": args.batch_rows, "repeats": repeats, "loop_max_n": loop_max_n, "unique_max_n": {kind: args.unique_max_n or KINDS[kind]["unique_max_n"] for kind in kinds}, "seed": args.seed, "kinds": {kind: KINDS[kind] for kind in kinds}},
        "figures": figures,
        "targets": build_targets(figures),
    }
    path = write_result("counting", args.out, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
