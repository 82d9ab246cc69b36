"""benchmarks/quality/: budgets, report, the command line; (slow) the real 0.9.1, the cpu budget."""

from __future__ import annotations

import json
import os

import pytest
from conftest import MINI_CIFAR, REPO_ROOT, load_script

quality = load_script("benchmarks/quality.py", "quality_benchmark")  # the README's command
from quality import budgets, report  # noqa: E402  (benchmarks/quality/: on sys.path now)

TINY = ["--n-test", "8", "--batch-size", "8", "--epochs", "1", "--max-steps", "4", "--knn-k", "20",
        "5", "--projection-size", "8", "--projection-hidden-size", "16", "--probe-epochs", "2",
        "--seeds", "0", "--curve-points", "2", "--threads", "1"]


def test_budgets_settings_and_lr_schedule():
    long, cpu = budgets.BUDGETS["cpu-long"], budgets.BUDGETS["cpu"]  # long: the former cpu one
    assert (long["backbone"], long["image_size"], long["epochs"]) == ("resnet18", None, 10)
    assert [cpu[k] for k in ("backbone", "image_size", "epochs", "batch_size", "seeds")] == [
        "resnet10-w16", 16, 36, 64, [0, 1, 2]]
    cfg = budgets.make_config("cpu-long", 32, {"epochs": 2, "tau": None}, seeds=[5])
    assert (cfg["image_size"], cfg["epochs"], cfg["tau"], cfg["seeds"]) == (32, 2, 0.99, [5])
    with pytest.raises(ValueError, match="--backbone must be one of"):
        budgets.make_config("cpu", 32, {"backbone": "resnet9000"})
    # 4,085 images in batches of 64: 63 steps per epoch; LR 0.004 * 64 / 256, 2 warm-up epochs
    lrs = budgets.lr_schedule(budgets.make_config("cpu", 32), 4085)
    assert len(lrs) == 63 * 36 and lrs[0] == pytest.approx(0.001 / 126)
    assert max(lrs) == lrs[125] == pytest.approx(0.001) and 0 < lrs[-1] < 1e-8
    with pytest.raises(ValueError, match="exceeds the 40 training images"):
        budgets.lr_schedule(cpu, 40)


def test_summary_paired_by_seed_report_and_the_command_line_end_to_end(npz_file, tmp_path, capsys):
    runs = lambda values, **extra: [  # noqa: E731  (seed-numbered runs, linear = kNN + 1)
        {"seed": s, **extra, "knn_top1@20": v, "linear_top1": v + 1} for s, v in enumerate(values)]
    summary = report.summarize(dict(random=runs([30.0, 20.0, 25.0]), ours=runs(
        [41.0, 31.0, 37.0], pretrain_wall_s=60.0, steps=5), peer=[dict(seed=0, skipped="no peer")],
        lightly=runs([40.5, 31.0, 36.5])), [20])
    assert summary["random"]["knn_top1@20"]["std"] == pytest.approx(5.0)
    gain = summary["ours"]["minus_random"]["knn_top1@20"]  # paired: 11, 11, 12 (spread 0.58)
    assert (gain["mean"], gain["std"]) == pytest.approx((34 / 3, 3 ** -0.5))
    assert summary["peer"] == {"skipped": "no peer"}
    table = report.markdown_table(summary, [20])
    assert "| ours | 36.3 ± 5.0 | 37.3 ± 5.0 | +11.3 ± 0.6 | 60 | 5 | 3 |" in table
    assert "| peer | skipped: no peer |" in table
    ours, lightly = report.verdict(summary, [20])
    assert "+11.3 ± 0.6" in ours and ours.endswith(": MET")
    assert lightly.startswith("ours - lightly, kNN@20: +0.3") and lightly.endswith("seed spread")
    worse = report.summarize(dict(random=runs([30.0]), ours=runs([35.0])), [20])
    assert report.verdict(worse, [20])[0].endswith("NOT MET")
    quality.main(["--data", str(npz_file), *TINY, "--models", "random", "ours", "peer",
                  "--output", str(out := tmp_path / "q.json"), "--log-dir", str(tmp_path / "logs")])
    saved = json.loads(out.read_text())
    assert {"config", "hardware", "versions", "data", "backbone", "same_init", "runs", "notes",
            "summary", "table", "verdict", "total_wall_s"} <= set(saved) and saved["same_init"]
    assert [saved["data"][k] for k in ("n_train", "n_test", "image_size")] == [40, 8, 16]
    rnd, ours = saved["runs"]["random"][0], saved["runs"]["ours"][0]
    assert saved["runs"]["peer"] == [dict(seed=0, skipped="no --peer-python given")]
    assert ours["steps"] == 4 and ours["init_checksum"] == rnd["init_checksum"]  # same weights
    assert {"knn_top1@20", "knn_top1@5", "linear_top1", "feature_std"} <= set(ours)
    assert [p["step"] for p in ours["curve"]] == [0, 2, 4]  # initial weights, steps 2 and 4
    assert ours["curve"][0]["knn_top1@20"] == rnd["knn_top1@20"]  # the initial: random init
    steps = [json.loads(line) for line in (tmp_path / "logs/ours_seed0_steps.jsonl").open()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and steps[0]["lr"] > 0
    again = quality.main(["--from-json", str(out), "--plot", str(png := tmp_path / "q.png")])
    assert saved["table"] in capsys.readouterr().out and again["table"] == saved["table"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert quality.main(["--data", "/absent.npz"]) is None and "SKIP" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown models"):
        quality.main(["--data", str(npz_file), "--models", "nope"])


@pytest.mark.slow
def test_peer_harness_trains_the_real_0_9_1(npz_file):
    python = os.environ.get("BYOL_PEER_PYTHON") or pytest.skip("BYOL_PEER_PYTHON (0.9.1) not set")
    result = quality.main(["--data", str(npz_file), *TINY, "--models", "random", "peer-nosem",
                           "--peer-python", python])
    (peer,), (rnd,) = result["runs"]["peer-nosem"], result["runs"]["random"]
    assert peer["library_version"] == "0.9.1" and str(REPO_ROOT) not in peer["library_file"]
    assert peer["steps"] == 4 and [p["step"] for p in peer["curve"]] == [0, 2, 4]
    assert peer["init_checksum"] == rnd["init_checksum"]  # the same initial weights


@pytest.mark.slow
@pytest.mark.skipif(not MINI_CIFAR.exists(), reason="shared mini CIFAR-10 npz not present")
def test_cpu_budget_beats_random_init():
    """The README's guard: +4.8 in 12 epochs (quality_cpu_short.txt); under +3 something broke."""
    result = quality.main(["--budget", "cpu", "--data", str(MINI_CIFAR), "--models", "random",
                           "ours", "--seeds", "0", "--epochs", "12", "--curve-points", "0",
                           "--threads", "1"])  # the autouse fixture restores the thread count
    gain = (summary := result["summary"])["ours"]["minus_random"]["knn_top1@20"]["mean"]
    assert gain >= 3.0, f"only {gain:+.1f} kNN@20 points over random init:\n{result['table']}"
    assert summary["ours"]["linear_top1"]["mean"] > summary["random"]["linear_top1"]["mean"]
