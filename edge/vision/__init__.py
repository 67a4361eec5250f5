"""The recognition pipeline: camera, detector, alignment, FeatureNet, matcher, bundle, gallery."""
