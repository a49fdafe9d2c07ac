"""`search.evaluate`: a model beside the classical baselines on fixed test holes, by the same metric code."""

from __future__ import annotations

import json

import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from data.corrupt import Corruption, random_masks
from search import evaluate
from search.core.baselines import BASELINES, mean_fill
from search.core.grids import LABEL_HEIGHT, PAD


def test_baselines_keep_known_pixels_and_fill_holes(small_images):
    image = small_images.batch(list(range(4)))
    mask = random_masks(Corruption(4, 16, 64), 4, 64, generator=torch.Generator().manual_seed(0))
    known = mask.expand_as(image) == 0
    for name, fill in BASELINES.items():
        out = fill(image, mask)
        assert out.shape == image.shape and torch.isfinite(out).all(), name
        assert (out[known] - image[known]).abs().max() < 1 / 255 + 1e-6, name  # uint8 round trip at most
    filled = mean_fill(image, mask)
    valid = 1 - mask
    mean = (image * valid).sum(dim=(2, 3)) / valid.sum(dim=(2, 3))  # (B, 3) mean of the known pixels
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    assert torch.allclose(filled[0, :, ys[0], xs[0]], mean[0], atol=1e-6)


def test_evaluate_prints_table_writes_json_image_and_mlflow(tiny_checkpoint, tmp_path, capsys):
    out, js = tmp_path / "eval", tmp_path / "eval.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = evaluate.main(["--model", str(tiny_checkpoint), "--device", "cpu", "--out", str(out),
                          "--tracking-uri", uri, "--json", str(js)])
    assert code == 0
    text = capsys.readouterr().out
    for name in ("model", "mean fill", "pyramid pre-fill", "OpenCV Telea", "OpenCV Navier-Stokes", "biharmonic"):
        assert name in text
    summary = json.loads(js.read_text())
    results = summary["results"]
    assert summary["images"] > 0
    assert results["pyramid pre-fill"]["psnr_hole"] > results["mean fill"]["psnr_hole"]
    assert all(r["psnr"] > r["psnr_hole"] for r in results.values())
    rows = min(4, summary["images"])
    with Image.open(out / "comparison.png") as im:
        # 4 labelled columns (masked | Telea | model | target) of 64 px tiles, PAD between and around them.
        assert im.size == (4 * (64 + PAD) + PAD, rows * (64 + PAD) + PAD + LABEL_HEIGHT)
        strip = im.crop((0, 0, im.width, LABEL_HEIGHT)).convert("L")
        assert strip.getextrema()[0] < 128  # the labels are drawn
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])[0]
    assert run.data.metrics["test/model/psnr_hole"] == results["model"]["psnr_hole"]
    assert run.info.status == "FINISHED"
