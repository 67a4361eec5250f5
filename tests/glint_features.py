"""A small real feature set shared by the converter's training and evaluation tests:
FeatureNet features of the first 12 crops of each of the 18 glint_celebs people (and of
their mirror images), computed once per test session (by one xdist worker) and cached in
the session's temp folder."""

import pytest

from session_cache import computed_once, session_dir

PER_PERSON = 12


def feature_cache(tmp_path_factory):
    """This session's feature cache folder."""
    return session_dir(tmp_path_factory) / "feature-cache"


@pytest.fixture(scope="session")
def small_glint(shared, tmp_path_factory):
    from converter.features import dataset_features

    root = shared("data/faces/glint_celebs")
    with computed_once(tmp_path_factory, "feature-cache") as cache:
        return dataset_features(root, cache=cache, per_identity=PER_PERSON, progress=False,
                                log=lambda m: None)
