"""benchmarks/gpu_recipes.py on the CPU: a recipe is built by the CLI with its own callbacks and trained for the
timed steps on random batches of the datamodule's input shape."""

import json

from benchmarks import gpu_recipes


def test_times_the_recipes_own_training_steps(tmp_path):
    out = tmp_path / "gpu_recipes.json"
    gpu_recipes.main(["--accelerator", "cpu", "--steps", "2", "--warmup", "1", "--batch-size", "4",
                      "--precisions", "32-true", "--recipes", "quickstart", "prune_resnet56_cifar10_b",
                      "--root", str(tmp_path / "runs"), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["quickstart", "prune_resnet56_cifar10_b"]
    for row in rows:
        assert "error" not in row, row
        assert row["timed_steps"] == 2 and row["images_per_s"] > 0 and row["batch"] == 4
    assert rows[0]["input_shape"] == [1, 8, 8] and rows[1]["input_shape"] == [3, 32, 32]
    assert "| prune_resnet56_cifar10_b | 4 | 3x32x32 | 32-true |" in out.with_suffix(".md").read_text()


def test_a_failing_recipe_is_a_row_not_a_crash(tmp_path):
    out = tmp_path / "gpu_recipes.json"
    gpu_recipes.main(["--accelerator", "cpu", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                      "--precisions", "32-true", "--recipes", "no_such_recipe", "--root", str(tmp_path / "runs"),
                      "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert "error" in row and "no_such_recipe" in row["error"]
