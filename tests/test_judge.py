"""The shipped judge reads every attribute of held-out renders (≥ 98 %) and is at chance on noise.

Run: pytest tests/test_judge.py
"""

import json

import numpy as np
import pytest
import torch

from trainers.tinyworld.judge import (
    DEFAULT_PATH,
    Judge,
    JudgeConfig,
    accuracy_table,
    head_sizes,
    load_card,
    load_judge,
    main,
    noise_accuracy,
    random_batch,
    save_judge,
    train_judge,
)
from trainers.tinyworld.render import ATTRIBUTES, CATEGORIES

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def judge():
    return load_judge()


@pytest.fixture(scope="module")
def heldout():
    # A seed stream the training (seed 0, streams 0 and 1) never used: new attributes, new jitter.
    return random_batch(900, np.random.default_rng([12345, 7]))


def test_shipped_judge_reads_every_attribute_of_heldout_renders(judge, heldout):
    table = accuracy_table(judge, *heldout)
    assert set(table) == set(head_sizes())
    low = {name: acc for name, acc in table.items() if acc < 0.98}
    assert not low, f"heads under 98 %: {low}"


def test_ground_truth_round_trips_through_the_judge(judge, heldout):
    images, labels = heldout
    predictions = judge.predict(images)
    all_correct = torch.ones(len(images), dtype=torch.bool)
    for name, target in labels.items():
        applies = target != -100
        all_correct[applies] &= predictions[name][applies] == target[applies]
    assert all_correct.float().mean() >= 0.97


def test_shipped_judge_is_near_chance_on_noise(judge):
    chance = {name: 1 / k for name, k in head_sizes().items()}
    for name, acc in noise_accuracy(judge, 900, seed=5).items():
        assert abs(acc - chance[name]) < 0.08, (name, acc, chance[name])


def test_shipped_checkpoint_is_small_safe_and_documented():
    files = {p.name for p in DEFAULT_PATH.iterdir()}
    assert files == {"model.safetensors", "config.json", "card.json"}
    assert sum(p.stat().st_size for p in DEFAULT_PATH.iterdir()) < 2 * 2**20
    card = load_card()
    for key in ("steps", "seed", "wall_time_s", "heldout_accuracy", "noise_accuracy", "chance"):
        assert key in card
    assert min(card["heldout_accuracy"].values()) >= 0.98
    assert json.loads((DEFAULT_PATH / "config.json").read_text())["heads"] == head_sizes()


def test_features_and_predictions_have_the_documented_shapes(judge, heldout):
    images = heldout[0][:5]
    assert judge.features(images).shape == (5, judge.config.features)
    predictions = judge.predict(images)
    assert set(predictions) == {"category"} | {f"{c}.{a}" for c in CATEGORIES for a in ATTRIBUTES[c]}
    assert all(p.dtype == torch.long and p.shape == (5,) for p in predictions.values())
    with pytest.raises(ValueError, match="images: expected"):
        judge.predict(torch.zeros(2, 3, 32, 32))


def test_save_load_round_trip_and_head_mismatch(tmp_path):
    small = Judge(JudgeConfig(width=4, features=8))
    save_judge(small, tmp_path / "j", {"steps": 0})
    loaded = load_judge(tmp_path / "j")
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.features(images), small.eval().features(images))
    config = json.loads((tmp_path / "j" / "config.json").read_text())
    config["heads"]["text.glyph"] = 34
    (tmp_path / "j" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match"):
        load_judge(tmp_path / "j")
    with pytest.raises(FileNotFoundError, match="--train"):
        load_judge(tmp_path / "missing")


def test_training_runs_and_writes_a_card(tmp_path):
    judge, card = train_judge(
        steps=3, batch_size=8, config=JudgeConfig(width=4, features=8), n_eval=30, progress=False
    )
    assert card["steps"] == 3 and set(card["heldout_accuracy"]) == set(head_sizes())
    main(["--train", "--steps", "2", "--batch-size", "4", "--n-eval", "30", "--out", str(tmp_path / "cli")])
    assert (tmp_path / "cli" / "card.json").is_file()
    with pytest.raises(SystemExit):
        main([])
