"""A small real feature set shared by the converter's training and evaluation tests:
FeatureNet features of the first 12 crops of each of the 18 glint_celebs people (and of
their mirror images), computed once per test session and cached in its temp folder."""

import pytest

PER_PERSON = 12


@pytest.fixture(scope="session")
def small_glint(shared, tmp_path_factory):
    from converter.features import dataset_features

    root = shared("data/faces/glint_celebs")
    cache = tmp_path_factory.getbasetemp() / "feature-cache"
    return dataset_features(root, cache=cache, per_identity=PER_PERSON, progress=False, log=lambda m: None)
