"""The embedded synthetic dataset: deterministic, fine-grained, sized as documented."""

from __future__ import annotations

import numpy as np

from fgbench.data.embedded import EmbeddedConfig, EmbeddedDataset, _class_attributes, generate_split, render_image


def test_deterministic_by_seed() -> None:
    cfg = EmbeddedConfig(genera=2, species=2, train_per_class=3, test_per_class=2, image_size=32)
    a, la = generate_split(cfg, "train")
    b, lb = generate_split(cfg, "train")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, _ = generate_split(EmbeddedConfig(genera=2, species=2, train_per_class=3, test_per_class=2, image_size=32,
                                         seed=1), "train")
    assert not np.array_equal(a, c)
    test, _ = generate_split(cfg, "test")
    assert not any((test[i] == a[j]).all() for i in range(len(test)) for j in range(len(a)))


def test_species_differ_only_in_small_local_details() -> None:
    cfg = EmbeddedConfig(image_size=64)
    attrs = _class_attributes(cfg)
    # same random draw (pose, background, noise) for two species of one genus vs two genera
    def draw(c: int) -> np.ndarray:
        return render_image(attrs[c], np.random.default_rng(42), cfg.image_size).astype(int)

    same_genus = (np.abs(draw(0) - draw(1)).sum(-1) > 60).mean()
    other_genus = (np.abs(draw(0) - draw(cfg.species)).sum(-1) > 60).mean()
    # classes differ in a few percent of the pixels (crown patch, spot; wing stripes across genera)
    assert 0 < same_genus < 0.06
    assert 0 < other_genus < 0.06


def test_default_size_and_labels() -> None:
    ds = EmbeddedDataset()
    train, test = ds.split("train"), ds.split("test")
    assert ds.num_classes == 12
    assert (len(train), len(test)) == (480, 240)
    assert train.uint8_images.shape[1:] == (48, 48, 3)
    assert sorted(set(train.labels.tolist())) == list(range(12))
    assert np.bincount(test.labels).tolist() == [20] * 12
