"""The sanity-tool CLIs end to end at tiny size: figures, JSON, plots, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from data.images import DEFAULT_IMAGES
from search import lr_find, overfit
from search.core import lr_range

TINY = ["--device", "cpu", "--set", "model.width=8", "--set", "model.depth=2", "--set", "train.precision=fp32"]


def test_overfit_prints_the_summary_line_and_writes_json(tmp_path, capsys):
    out = tmp_path / "overfit.json"
    code = overfit.main(["--size", "64", "--steps", "6", "--every", "3", "--min-ratio", "0", "--json", str(out),
                         *TINY])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("overfit: hole L1 ") and "x) in 6 steps" in lines[-1]
    figures = json.loads(out.read_text())
    assert figures["steps"] == 6 and len(figures["curve"]) == 2
    assert figures["initial_l1_hole"] > 0 and figures["config"]["loss.w_perceptual"] > 0
    assert figures["config"]["data.hole_size"] == 8  # holes scale with --size: 32 px at 256


def test_overfit_fails_when_the_loss_does_not_fall_enough(capsys):
    code = overfit.main(["--size", "64", "--steps", "2", "--every", "2", "--min-ratio", "1000", *TINY])
    assert code == 1
    assert "FAILED" in capsys.readouterr().err


def test_overfit_skips_bad_images_and_reports_them(tmp_path, capsys):
    for p in sorted(DEFAULT_IMAGES.glob("*.jpg"))[:8]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")  # small but above data.images.MIN_SIDE
    # 9 readable images wanted out of 10 files: every file is tried, so the broken one is met and counted.
    code = overfit.main(["--data", str(tmp_path), "--images", "9", "--size", "64", "--steps", "2", "--every", "2",
                         "--min-ratio", "0", *TINY])
    assert code == 0
    assert "1 unreadable skipped" in capsys.readouterr().out


def test_overfit_errors_are_one_clear_line(tmp_path, capsys):
    assert overfit.main(["--data", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no images" in err and "Traceback" not in err
    assert overfit.main(["--set", "model.dpeth=3"]) == 2
    assert "model.dpeth" in capsys.readouterr().err


def test_lr_find_suggests_a_rate_and_saves_a_plot(tmp_path, capsys):
    plot, out = tmp_path / "lr.png", tmp_path / "lr.json"
    code = lr_find.main(["--size", "64", "--images", "8", "--steps", "12", "--plot", str(plot), "--json", str(out),
                         *TINY, "--set", "train.batch_size=4"])
    assert code == 0
    figures = json.loads(out.read_text())
    assert 1e-7 <= figures["suggested_lr"] <= 1e-2 and 1e-6 <= figures["steepest_lr"] <= 1e-1
    assert len(figures["lrs"]) == len(figures["losses"]) >= 5
    assert figures["lrs"] == sorted(figures["lrs"])
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert "suggested learning rate" in capsys.readouterr().out
    assert figures["config"]["data.hole_size"] == 8


def test_lr_find_suggestions():
    lrs = [10 ** (-6 + i * 0.1) for i in range(50)]
    # Flat, then falling fastest around index 17, a plateau at its minimum, then blowing up.
    losses = [1.0] * 15 + [1.0 - 0.15 * i for i in range(1, 6)] + [0.25] * 20 + [2.0 + i for i in range(10)]
    assert lrs[15] <= lr_range.steepest(lrs, losses) <= lrs[24]
    smoothed = lr_range.smooth(losses)
    assert lr_range.suggest(lrs, losses) == pytest.approx(lrs[smoothed.index(min(smoothed))] / 10)
    assert lrs[30] / 10 <= lr_range.suggest(lrs, losses) <= lrs[40] / 10


def test_progress_rate_of_a_new_round_counts_from_the_last_call(capsys, monkeypatch):
    from search.core import progress as progress_module

    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0])  # construction, then one call per 10 s
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    progress = progress_module.Progress("steps", every=0.0)
    progress(1, 2)
    progress(2, 2)
    progress(1, 2)  # the next epoch: 1 step in the 10 s since the last call, not 1 step in no time
    progress(2, 2)
    rates = [line.split("(")[1] for line in capsys.readouterr().err.splitlines()]
    assert rates == ["0.1/s)", "0.1/s)", "0.1/s)", "0.1/s)"]
