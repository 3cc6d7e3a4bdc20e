import random

import pytest

from ct_pipeline.training.split import split_patients

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
IDS = [f"case{i:03d}" for i in range(20)]


def test_every_patient_lands_in_exactly_one_split():
    split = split_patients(IDS, FRACTIONS, seed=7)
    assert sorted(sum(split.values(), [])) == IDS
    assert [len(split[name]) for name in ("train", "val", "test")] == [14, 2, 4]
    assert all(split[name] == sorted(split[name]) for name in split)


def test_order_of_discovery_does_not_matter_but_the_seed_does():
    shuffled = IDS.copy()
    random.Random(3).shuffle(shuffled)
    assert split_patients(shuffled, FRACTIONS, seed=7) == split_patients(
        IDS, FRACTIONS, seed=7
    )
    assert split_patients(IDS, FRACTIONS, seed=7) != split_patients(
        IDS, FRACTIONS, seed=8
    )


def test_an_empty_split_is_an_error_naming_it():
    with pytest.raises(
        ValueError, match=r"split 'val' would be empty: 4 patients x fraction 0.1"
    ):
        split_patients(IDS[:4], FRACTIONS, seed=0)
    with pytest.raises(ValueError, match=r"split 'train' would be empty"):
        split_patients(IDS[:2], {"train": 0.0, "val": 0.5, "test": 0.5}, seed=0)


@pytest.mark.parametrize(
    ("ids", "fractions", "message"),
    [
        (IDS, {"train": 0.7, "val": 0.3}, "keys"),
        (IDS, {"train": 0.7, "val": 0.2, "test": 0.2}, "sum to 1"),
        (IDS, {"train": 1.2, "val": -0.1, "test": -0.1}, ">= 0"),
        (["a", "b", "a", "c"], FRACTIONS, r"duplicates \['a'\]"),
    ],
)
def test_bad_inputs_are_rejected(ids, fractions, message):
    with pytest.raises(ValueError, match=message):
        split_patients(ids, fractions, seed=0)
