"""Figures and the HTML page, drawn from real probe runs on the bundled MNIST digits."""

import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib_image = pytest.importorskip("matplotlib.image", reason="figures need matplotlib: pip install -e '.[figures]'")

import probe
from models import load_checkpoint
from probe import figures, html_report, report
from probe import run as probe_run
from probe.store import ProbeWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ("conv1", "fc", "latent")
# A code seen once among 500 samples with a label of frequency 0.1 has NPMI of about
# log(10) / log(500) = 0.37, so every layer with a singleton code has hits at 0.3.
THRESHOLD = "0.3"
EXPECTED_FIGURES = {"buildup.png", "decoder-grid.png"} | {f"{kind}-{layer}.png" for kind in ("gallery", "positional") for layer in LAYERS}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Virtual time lets the page's load handler run before the DOM is dumped.
    "--virtual-time-budget=10000",
)


@pytest.fixture(scope="module")
def drawn_run(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    code = probe_run.main(
        [
            "--layers", ",".join(LAYERS), "--checkpoint", str(checkpoint), "--dataset", "mnist-sample",
            "--limit", "500", "--calibration", "500", "--threshold", THRESHOLD, "--min-count", "1", "--all-hits",
            "--out", str(folder / "probe.h5"), "--figures", str(folder / "figures"), "--html", str(folder / "page.html"),
        ]
    )
    assert code == 0
    return folder


def png_pixels(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} does not start with the PNG signature"
    return matplotlib_image.imread(path)


def test_run_writes_every_figure(drawn_run):
    written = {path.name for path in (drawn_run / "figures").iterdir()}
    assert written == EXPECTED_FIGURES


@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_figure_is_nonblank_png(drawn_run, name):
    pixels = png_pixels(drawn_run / "figures" / name)
    assert pixels.ndim == 3
    assert pixels.shape[0] >= 200
    assert pixels.shape[1] >= 300
    rgb = pixels[:, :, :3]
    assert rgb.std() > 0.05, f"{name} is nearly one colour"
    channels = (rgb.reshape(-1, 3) * 255).round().astype(np.int64)
    colours = np.unique(channels[:, 0] << 16 | channels[:, 1] << 8 | channels[:, 2])
    assert len(colours) >= 16, f"{name} has only {len(colours)} distinct colours"


def test_example_indices_match_codes(drawn_run):
    with probe.load(drawn_run / "probe.h5") as run:
        layer = run.layers["latent"]
        hits = layer.result.hits(float(THRESHOLD), min_count=1)[:5]
        assert hits
        hit_codes = np.array([hit.code for hit in hits])
        found = figures.example_indices(layer.codes, hit_codes, 3)
        codes = layer.codes[()]
    for hit, indices in zip(hits, found):
        expected = np.flatnonzero((codes == np.array(hit.code)).all(axis=1))[:3]
        np.testing.assert_array_equal(indices, expected)
        assert len(indices) == min(3, hit.code_count)


def test_example_indices_across_blocks(monkeypatch):
    codes = np.random.default_rng(0).integers(0, 3, size=(2_000, 4)).astype(np.uint8)
    targets = codes[[5, 1_500]].astype(np.int64)
    monkeypatch.setattr(figures, "MATCH_BLOCK_ELEMENTS", 64)  # blocks of 8 rows
    found = figures.example_indices(codes, targets, 7)
    for code, indices in zip(targets, found):
        expected = np.flatnonzero((codes == code).all(axis=1))[:7]
        np.testing.assert_array_equal(indices, expected)


def test_gallery_follows_significance(drawn_run):
    with probe.load(drawn_run / "probe.h5") as run:
        result = run.layers["fc"].result
        assert result.whole.significant is not None
        significant = result.hits(float(THRESHOLD), 1, significant_only=True)
        figure_set = figures.render_figures(run, threshold=float(THRESHOLD), min_count=1, layers=["fc"], significant_only=True)
    names = [figure.name for figure in figure_set.figures]
    assert ("gallery-fc" in names) == bool(significant)
    if not significant:
        assert any("significant at the run's FDR" in note for note in figure_set.notes)


def test_decoded_variations_change_one_position(checkpoint):
    model, _ = load_checkpoint(checkpoint)
    typical = np.array([3, 7, 11], dtype=np.int64)
    pictures = figures.decoded_variations(model, typical)
    assert pictures.shape == (3, 26, 28, 28)
    assert pictures.min() >= 0.0
    assert pictures.max() <= 1.0

    with torch.no_grad():
        base = torch.sigmoid(model.decode(F.one_hot(torch.from_numpy(typical[None]), 26).float()))[0, 0].numpy()
        varied = torch.sigmoid(model.decode(F.one_hot(torch.tensor([[3, 20, 11]]), 26).float()))[0, 0].numpy()
    for position in range(3):
        np.testing.assert_allclose(pictures[position, typical[position]], base, atol=1e-5)
    np.testing.assert_allclose(pictures[1, 20], varied, atol=1e-5)


def test_positional_heatmap_fixed_scale(drawn_run):
    with probe.load(drawn_run / "probe.h5") as run:
        result = run.layers["latent"].result
    figure = figures.positional_figure("latent", result)
    images = [image for ax in figure.axes for image in ax.images]
    assert len(images) == len(result.label_values) + 1
    for image in images:
        assert image.get_clim() == (-1.0, 1.0)
    unseen = result.positional.counts.sum(axis=2) == 0
    assert unseen.any()
    np.testing.assert_array_equal(np.ma.getmaskarray(images[0].get_array()), unseen)


def test_positional_many_labels_best_only():
    codes = np.random.default_rng(0).integers(0, 4, size=(3_000, 2))
    labels = np.random.default_rng(1).integers(0, 30, size=3_000)
    result = probe.analyze(codes, labels)
    figure = figures.positional_figure("random", result)
    images = [image for ax in figure.axes for image in ax.images]
    assert len(images) == 1
    assert "best label per cell" in figure.get_suptitle()


def test_buildup_draws_optional_stats():
    codes = np.random.default_rng(0).integers(0, 4, size=(1_000, 2))
    labels = codes[:, 0] % 2
    plain = probe.analyze(codes, labels)
    # A file from before the significance test and held-out decoding has only these statistics.
    plain.stats = {key: plain.stats[key] for key in ("n_samples", "distinct_codes", "entropy_bits", "mutual_information_bits", "shuffled_mutual_information_bits")}
    plain.whole.significant = None
    extended = probe.analyze(codes, labels)
    extended.stats["corrected_mutual_information_bits"] = 0.9
    extended.stats["heldout_accuracy"] = 0.75

    without = figures.buildup_figure(["a", "b"], [plain, plain], 1.0, 0.4, 1)
    with_extra = figures.buildup_figure(["a", "b"], [plain, extended], 1.0, 0.4, 1)
    labels_without = {line.get_label() for ax in without.axes for line in ax.get_lines()}
    labels_with = {line.get_label() for ax in with_extra.axes for line in ax.get_lines()}
    assert "MI (plug-in)" in labels_without
    assert "MI, bias-corrected" not in labels_without
    assert "held-out accuracy" not in labels_without
    assert "MI, bias-corrected" in labels_with
    assert "held-out accuracy" in labels_with
    bars_without = {bars.get_label() for ax in without.axes for bars in ax.containers}
    bars_with = {bars.get_label() for ax in with_extra.axes for bars in ax.containers}
    assert bars_without == {"hits"}
    assert bars_with == {"hits", "significant hits (permutation test)"}


def test_report_cli_writes_figures(drawn_run, capsys):
    folder = drawn_run / "from-report"
    code = report.main([str(drawn_run / "probe.h5"), "--figures", str(folder), "--html", str(drawn_run / "report.html"), "--json", "--all-hits"])
    output = capsys.readouterr()
    assert code == 0
    assert {path.name for path in folder.iterdir()} == EXPECTED_FIGURES
    assert (drawn_run / "report.html").is_file()
    assert output.out.lstrip().startswith("{")
    assert f"Wrote {len(EXPECTED_FIGURES)} figures" in output.err


def test_report_notes_missing_sources(drawn_run, tmp_path, capsys):
    moved = tmp_path / "probe.h5"
    shutil.copy(drawn_run / "probe.h5", moved)
    with h5py.File(moved, "r+") as handle:
        handle.attrs["dataset"] = f"idx:{tmp_path / 'missing'}"
    code = report.main([str(moved), "--figures", str(tmp_path / "figures"), "--checkpoint", str(tmp_path / "missing.pt"), "--all-hits"])
    output = capsys.readouterr().out
    assert code == 0
    assert {path.name for path in (tmp_path / "figures").iterdir()} == {"buildup.png"} | {f"positional-{layer}.png" for layer in LAYERS}
    assert "no galleries" in output
    assert "folder not found" in output
    assert "no decoder grid" in output
    assert "missing.pt not found" in output


def test_changed_checkpoint_skips_grid(drawn_run, tmp_path, checkpoint):
    changed = tmp_path / "model.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["config"]["note"] = "retrained"
    torch.save(payload, changed)
    with probe.load(drawn_run / "probe.h5") as run:
        figure_set = figures.render_figures(run, threshold=float(THRESHOLD), min_count=1, layers=["latent"], checkpoint=changed, significant_only=False)
    assert [figure.name for figure in figure_set.figures] == ["buildup", "gallery-latent", "positional-latent"]
    assert any("SHA-256 differs" in note for note in figure_set.notes)


def test_custom_model_has_no_grid(tmp_path, monkeypatch, capsys):
    (tmp_path / "figure_test_models.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = probe_run.main(
        [
            "--model", "figure_test_models:build", "--layers", "1,3", "--dataset", "mnist-sample", "--limit", "300",
            "--threshold", THRESHOLD, "--min-count", "1", "--permutations", "0", "--ngrams", "0",
            "--out", "probe.h5", "--figures", "figures",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "no decoder grid: the model is a Sequential" in output
    names = {path.name for path in (tmp_path / "figures").iterdir()}
    assert "decoder-grid.png" not in names
    assert {"buildup.png", "positional-1.png", "positional-3.png"} <= names


def test_missing_matplotlib_exits_2(drawn_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = report.main([str(drawn_run / "probe.h5"), "--figures", str(tmp_path / "figures")])
    error = capsys.readouterr().err
    assert code == 2
    assert "pip install -e '.[figures]'" in error
    assert not (tmp_path / "figures").exists()

    code = probe_run.main(["--layers", "latent", "--dataset", "mnist-sample", "--limit", "10", "--html", str(tmp_path / "page.html"), "--out", str(tmp_path / "p.h5")])
    error = capsys.readouterr().err
    assert code == 2
    assert "pip install -e '.[figures]'" in error
    assert not (tmp_path / "p.h5").exists()


def test_figures_path_is_file_exits_2(drawn_run, tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.write_text("")
    code = report.main([str(drawn_run / "probe.h5"), "--figures", str(existing)])
    assert code == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_html_escapes_file_values(tmp_path):
    codes = np.random.default_rng(0).integers(0, 3, size=(400, 2))
    labels = codes[:, 0]
    layer = "x<b>&y"
    with ProbeWriter(tmp_path / "odd.h5", attrs={"dataset": "<script>alert(1)</script>", "split": "all", "n_samples": 400}) as writer:
        writer.write_labels(labels)
        writer.add_layer(layer, positions=2, alphabet_size=3, dtype=np.uint8)
        writer.append(layer, codes)
        writer.write_result(layer, probe.analyze(codes, labels))
        writer.commit()
    with probe.load(tmp_path / "odd.h5") as run:
        figure_set = figures.render_figures(run)
        page = html_report.build_html(run, figure_set, 0.4, 1)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x<b>&y" not in page
    assert "x&lt;b&gt;&amp;y" in page
    assert any("no galleries" in note for note in figure_set.notes)


def test_html_is_self_contained(drawn_run):
    page = (drawn_run / "page.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(EXPECTED_FIGURES)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    for table_title in ("Top whole-code hits", "Best (position, symbol) per label", "MI (bits)"):
        assert table_title in page


# CI sets PROBE_REQUIRE_CHROMIUM=1 after installing chromium, so there a missing browser fails the test.
@pytest.mark.skipif(
    shutil.which("chromium") is None and os.environ.get("PROBE_REQUIRE_CHROMIUM") != "1",
    reason="chromium is not installed (Debian: apt-get install -y chromium)",
)
def test_html_loads_in_chromium(drawn_run, tmp_path):
    page = drawn_run / "page.html"
    completed = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    check = re.search(r'<p id="image-check" data-total="(\d+)" data-decoded="(\d+)"', completed.stdout)
    assert check, "the page's load handler did not run: " + completed.stdout[-500:]
    total, decoded = int(check.group(1)), int(check.group(2))
    assert total == len(EXPECTED_FIGURES)
    assert decoded == total
