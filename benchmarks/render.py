"""Render the benchmark result files into one Markdown page.

    python -m benchmarks.render --results benchmarks/results --out docs/benchmarks.md

Every section shows the command, the machine and the date of its figures. A missed
target is listed with its cause and plan, read from benchmarks/misses.toml by target
id. Until someone writes one there, the page marks it as still to be written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from .common import RESULTS_DIR, format_rate

MISSES_FILE = Path(__file__).resolve().parent / "misses.toml"
SECTIONS = (
    ("counting", "1. Counting"),
    ("overhead", "2. Probing overhead"),
    ("memory", "3. Memory"),
    ("hdf5", "4. HDF5 writes and reads"),
    ("gpu", "5. GPU counting"),
)
MISSING_CAUSE = "_still to be written: add it under this target's id in benchmarks/misses.toml and render again._"


def load_results(folder: Path) -> dict[str, dict]:
    """Read ``<name>.json`` for every section that has one."""
    results = {}
    for name, _ in SECTIONS:
        path = folder / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return results


def load_misses(path: Path) -> dict[str, str]:
    """Read the cause-and-plan texts of missed targets, keyed by target id."""
    if not path.exists():
        return {}
    with open(path, "rb") as handle:
        table = tomllib.load(handle)
    return {key: str(value.get("cause_and_plan", "")).strip() if isinstance(value, dict) else str(value).strip() for key, value in table.items()}


def machine_line(machine: dict) -> str:
    memory = machine.get("memory_bytes")
    memory_text = f"{memory / 2**30:.1f} GiB RAM" if memory else "RAM unknown"
    parts = [
        f"{machine.get('cpu_model', 'unknown CPU')}",
        f"{machine.get('cpu_cores_usable')} usable of {machine.get('cpu_cores')} cores",
        f"{machine.get('torch_threads')} torch threads",
        memory_text,
        f"Python {machine.get('python')}",
        f"torch {machine.get('torch')}",
        f"numpy {machine.get('numpy')}",
        f"h5py {machine.get('h5py')} (HDF5 {machine.get('hdf5')})",
        f"device {machine.get('device')}",
    ]
    if machine.get("gpu"):
        gpu = machine["gpu"]
        parts.append(f"GPU {gpu['name']} ({gpu['memory_bytes'] / 2**30:.0f} GiB, CUDA {gpu['cuda']})")
    return ", ".join(parts)


def provenance(result: dict) -> list[str]:
    lines = [f"- Command: `{result['command']}`", f"- Date: {result['date']}", f"- Machine: {machine_line(result['machine'])}"]
    if result.get("quick"):
        lines.append("- **Quick mode**: small sizes that check the script; these are not reference figures.")
    return lines


def format_target_value(record: dict) -> str:
    value = record.get("measured")
    if value is None:
        return "nothing"
    if record.get("unit") == "fraction":
        return f"{value:+.1%}"
    if record.get("unit") == "x":
        return f"{value:,.2f}x"
    return format_rate(value, record.get("unit", ""))


def format_target_limit(record: dict) -> str:
    sign = ">=" if record["higher_is_better"] else "<="
    if record.get("unit") == "fraction":
        return f"{sign} {record['limit']:.0%}"
    if record.get("unit") == "x":
        return f"{sign} {record['limit']:,}x"
    return f"{sign} {format_rate(record['limit'], record.get('unit', ''))}"


def target_lines(result: dict, misses: dict[str, str]) -> list[str]:
    lines = []
    for record in result.get("targets", []):
        status = {True: "met", False: "**missed**", None: "not measured in this run"}[record["met"]]
        note = f" ({record['note']})" if record.get("note") else ""
        lines.append(f"- Target `{record['id']}`: {record['description']}. Measured {format_target_value(record)}{note}, target {format_target_limit(record)}: {status}.")
        if record["met"] is False:
            lines.append(f"  - Cause and plan: {misses.get(record['id']) or MISSING_CAUSE}")
    return lines


def format_seconds(seconds: float) -> str:
    """Format a duration with three significant digits in ms below one second, in s above."""
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:,.3g} s" if seconds < 1000 else f"{seconds:,.0f} s"


# -- sections ----------------------------------------------------------------------------


def counting_section(result: dict) -> list[str]:
    lines = ["Whole-code and positional NPMI of synthetic codes against 10 labels (codes/s counts code rows).", ""]
    kinds = result["settings"]["kinds"]
    for kind, spec in kinds.items():
        lines += [f"**{spec['title']}**", "", "| n | distinct codes | counter | counter codes/s | np.unique + Counter | speed-up vs np.unique | original loop | speed-up vs loop |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for figure in result["figures"]:
            if figure["kind"] != kind or not figure.get("reported", True):
                continue
            unique = format_seconds(figure["numpy_unique_seconds"]) if "numpy_unique_seconds" in figure else "not timed"
            unique_speedup = f"{figure['speedup_vs_numpy_unique']:,.1f}x" if "speedup_vs_numpy_unique" in figure else "n/a"
            if "loop_seconds" in figure:
                label = "" if figure.get("loop_measured") else f" (extrapolated from n = {figure['loop_extrapolated_from_n']:,})"
                loop = f"{format_seconds(figure['loop_seconds'])}{label}"
                loop_speedup = f"{figure['speedup_vs_loop']:,.0f}x"
            else:
                loop, loop_speedup = "not timed", "n/a"
            lines.append(
                f"| {figure['n']:,} | {figure['distinct_codes']:,} | {format_seconds(figure['counter_seconds'])} | {format_rate(figure['counter_codes_per_second'])} "
                f"| {unique} | {unique_speedup} | {loop} | {loop_speedup} |"
            )
        lines.append("")
    settings = result["settings"]
    lines.append(
        f"Medians of {settings['repeats']} interleaved repeats; speed-ups are medians of per-repeat ratios. The original loop is timed up to "
        f"n = {settings['loop_max_n']:,} and extrapolated beyond by its cost per (distinct code x sample): an estimate, not a measurement."
    )
    return lines


def overhead_section(result: dict) -> list[str]:
    figure = result["figures"][0]
    settings = result["settings"]
    lines = [
        f"{settings['n']:,} images of `{settings['dataset']}` ({settings['split']}), layers {settings['layers']}, batch {settings['batch_size']}, "
        f"device {settings['device']}; weights: {settings['weights']}.",
        f"probe.run command: `{settings['probe_command']}`",
        "",
        "| part | seconds (median) |",
        "|---|---:|",
    ]
    for key, label in (
        ("bare_forward", "bare forward, whole model"),
        ("bare_forward_to_last_layer", "bare forward, stopped after the last probed layer"),
        ("forward", "probe.run forward with hooks"),
        ("quantize", "quantisation"),
        ("write", "HDF5 writes (buffered appends)"),
        ("count", "counting"),
        ("pass", "the pass: forward + quantisation + writes + counting"),
        ("assess", "statistics after the pass"),
        ("other", "other: calibration, HDF5 flushes, result writes"),
        ("total", "probe.run seconds_total"),
    ):
        lines.append(f"| {label} | {figure[key]:.3f} |")
    lines += [
        "",
        f"Pass / bare forward of the whole model: {figure['pass_ratio']:.2f}x. Pass / bare forward stopped after the last probed layer: "
        f"{figure['pass_ratio_to_last_layer']:.2f}x. Medians of per-repeat ratios over {settings['repeats']} repeats.",
    ]
    return lines


def memory_section(result: dict) -> list[str]:
    settings = result["settings"]
    lines = [
        f"`{settings['dataset']}` ({settings['split']}), layers {settings['layers']}, batch {settings['batch_size']}, probe.run options `{settings['probe_args']}`; weights: {settings['weights']}.",
        "Each size runs in a fresh subprocess. The larger size repeats the same images by index, so the image tensor is the same size in both runs.",
        "",
        "| samples | peak RSS (VmHWM) |",
        "|---:|---:|",
    ]
    for figure in result["figures"]:
        lines.append(f"| {figure['n']:,} | {figure['peak_rss_bytes'] / 2**20:,.1f} MiB |")
    lines += ["", f"Growth from {result['figures'][0]['n']:,} to {result['figures'][1]['n']:,} samples: {result['growth']:+.1%}."]
    return lines


def hdf5_section(result: dict) -> list[str]:
    settings = result["settings"]
    lines = [
        f"conv1 codes with --pool none: {settings['n']:,} x {settings['positions']} {settings['dtype']}, {settings['compression']}, "
        f"written in blocks of {settings['flush_every']:,} rows; weights: {settings['weights']}. Reads follow the writes, so the file is in the page cache.",
        "",
        f"| layout | chunks | file | write | write MiB/s | read all | read MiB/s | first {settings['slice_rows']:,} rows |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"chunk_shape": "probe.store.chunk_shape", "h5py_auto": "h5py chunks=True", "probe_writer": "ProbeWriter end to end"}
    for figure in result["figures"]:
        lines.append(
            f"| {names.get(figure['layout'], figure['layout'])} | {tuple(figure['chunks'])} | {figure['file_bytes'] / 2**20:.1f} MiB | {figure['write_seconds']:.3f} s "
            f"| {figure['write_bytes_per_second'] / 2**20:,.0f} | {figure['read_all_seconds']:.3f} s | {figure['read_bytes_per_second'] / 2**20:,.0f} | {figure['read_slice_seconds'] * 1e3:.1f} ms |"
        )
    lines += ["", f"MiB/s counts uncompressed code bytes. Medians of {settings['repeats']} interleaved repeats."]
    return lines


def gpu_section(result: dict | None) -> list[str]:
    if result is None or not result.get("figures"):
        where = "" if result is None else f" The last run found {result.get('status', 'no GPU')}."
        return [f"No GPU run has happened yet.{where} Run `python -m benchmarks.bench_gpu` on a machine with a CUDA GPU."]
    copy = result["copy_bandwidth"]
    lines = [
        f"Status: {result['status']}. Copy bandwidth of the device: {copy['bytes_per_second'] / 1e9:,.1f} GB/s (bytes read + written, `Tensor.copy_` of {copy['bytes'] / 2**30:.2f} GiB).",
        "",
        "| codes | n | distinct codes | seconds | codes/s | input GB/s | share of copy bandwidth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for figure in result["figures"]:
        lines.append(
            f"| {figure['kind']} | {figure['n']:,} | {figure['distinct_codes']:,} | {figure['counter_seconds']:.3f} | {format_rate(figure['codes_per_second'])} "
            f"| {figure['input_bytes_per_second'] / 1e9:.2f} | {figure['fraction_of_copy_bandwidth']:.1%} |"
        )
    lines += ["", "Input bytes are the codes as uint8 plus the labels as int64."]
    return lines


RENDERERS = {"counting": counting_section, "overhead": overhead_section, "memory": memory_section, "hdf5": hdf5_section}


def render(results: dict[str, dict], misses: dict[str, str]) -> str:
    """Return the Markdown page for ``results``."""
    lines = [
        "# Benchmarks",
        "",
        "All figures come from the scripts in `benchmarks/`. Reproduce them from a fresh clone with",
        "",
        "```bash",
        "pip install -e . && python -m benchmarks.run_all --out docs/benchmarks.md",
        "```",
        "",
        "Times are medians of several repeats within one run, and ratios compare methods measured in that same run.",
        "",
    ]
    summary = [record for result in results.values() for record in result.get("targets", [])]
    if summary:
        lines += ["## Targets", "", "| target | measured | target | status |", "|---|---:|---:|---|"]
        for record in summary:
            status = {True: "met", False: "missed", None: "not measured"}[record["met"]]
            lines.append(f"| `{record['id']}` | {format_target_value(record)} | {format_target_limit(record)} | {status} |")
        lines.append("")
    for name, title in SECTIONS:
        lines += [f"## {title}", ""]
        result = results.get(name)
        if name == "gpu":
            if result is not None:
                lines += provenance(result) + [""]
            lines += gpu_section(result) + [""]
            continue
        if result is None:
            lines += [f"Not run yet: `python -m benchmarks.bench_{name}`.", ""]
            continue
        lines += provenance(result) + [""] + RENDERERS[name](result) + [""]
        targets = target_lines(result, misses)
        if targets:
            lines += targets + [""]
    return "\n".join(lines).rstrip() + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description="Render benchmark result files into one Markdown page.")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of <name>.json result files (default benchmarks/results)")
    parser.add_argument("--misses", type=Path, default=MISSES_FILE, help="TOML file of causes and plans for missed targets (default benchmarks/misses.toml)")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: print to standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        page = render(load_results(args.results), load_misses(args.misses))
    except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as error:
        print(f"error: cannot render {args.results}: {error}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(page)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
