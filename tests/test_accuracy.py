"""The run's accuracy figure: per-class test recall from predictions.csv, and the figure's inputs."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from daamlab.accuracy import class_recall, save_accuracy_figure


def write_predictions(path, pairs: list[tuple[str, str]], classes=("a", "b", "c")) -> None:
    header = ["row", "id", "group", "label", "prediction", *(f"p_{c}" for c in classes)]
    lines = [",".join(header)]
    for i, (label, pred) in enumerate(pairs):
        probs = ["1.0" if c == pred else "0.0" for c in classes]
        lines.append(",".join([str(i), f"x{i}", "g", label, pred, *probs]))
    path.write_text("\n".join(lines) + "\n")


def test_class_recall_is_the_share_of_each_class_predicted_as_itself(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions(path, [("a", "a"), ("a", "b"), ("a", "a"), ("a", "a"), ("b", "b"), ("b", "c")])
    recall = class_recall(path)
    assert list(recall) == ["a", "b", "c"]
    assert recall["a"] == 0.75 and recall["b"] == 0.5
    assert math.isnan(recall["c"])  # no test item of class c: undefined, not 0


def test_accuracy_figure_needs_an_epoch_and_draws_both_panels(tmp_path):
    assert save_accuracy_figure(tmp_path, {}, 0, None) is None and not (tmp_path / "accuracy.png").exists()
    epochs = {0: {"train/acc": 0.4, "val/acc": 0.5}, 1: {"train/acc": 0.6, "val/acc": 0.7}}
    alone = save_accuracy_figure(tmp_path, epochs, 1, None)
    width_alone = Image.open(alone).size[0]
    write_predictions(tmp_path / "predictions.csv", [("a", "a"), ("b", "a"), ("c", "c")])
    both = save_accuracy_figure(tmp_path, epochs, 1, tmp_path / "predictions.csv", val_name="dev")
    assert both == tmp_path / "accuracy.png"
    assert Image.open(both).size[0] > width_alone  # the per-class panel beside the curves


@pytest.mark.parametrize("missing", ["train/acc", "val/acc"])
def test_an_epoch_without_one_split_still_draws(tmp_path, missing):
    epochs = {0: {"train/acc": 0.4, "val/acc": 0.5}, 1: {"train/acc": 0.6, "val/acc": 0.7}}
    del epochs[1][missing]  # e.g. check_val_every_n_epoch=2: no validation at that epoch
    assert save_accuracy_figure(tmp_path, epochs, 0, None).is_file()
