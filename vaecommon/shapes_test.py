"""Tests of vaecommon.shapes: the factor grids, index <-> factors, hand-checkable images,
symmetries, determinism, the sampler, the splits, and loading through vaecommon.datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaecommon import datasets, shapes
from vaecommon.shapes import Shapes, render

SQUARE, ELLIPSE, HEART = 0, 1, 2


@pytest.fixture(scope="module")
def small_images() -> np.ndarray:
    """Every "shapes_small" image in flat-index order, bool (4608, 64, 64)."""
    data = Shapes("shapes_small")
    return data.images(data.index_to_factors(np.arange(len(data))))


def naive_render(shape, scale, orientation, x, y) -> np.ndarray:
    """One image, pixel by pixel, straight from the module docstring's definitions."""
    out = np.zeros((64, 64), bool)
    h, c, s = 10 * scale, math.cos(orientation), math.sin(orientation)
    for row in range(64):
        for col in range(64):
            dx, dy = (col + 0.5 - x) / h, (y - (row + 0.5)) / h
            u, v = c * dx + s * dy, c * dy - s * dx
            if shape == SQUARE:
                out[row, col] = max(abs(u), abs(v)) <= 1
            elif shape == ELLIPSE:
                out[row, col] = u * u + 4 * v * v <= 1
            else:
                yy = v + shapes.HEART_CENTROID_Y
                out[row, col] = (u * u + yy * yy - 1) ** 3 - u * u * yy ** 3 <= 0
    return out


# ------------------------------------------------------------------------------- the grids

def test_grid_sizes_and_values():
    full, small = Shapes("shapes"), Shapes("shapes_small")
    assert full.factors_num_values == (3, 6, 40, 32, 32) and len(full) == 737_280  # dSprites'
    assert small.factors_num_values == (3, 3, 8, 8, 8) and len(small) == 4_608
    assert full.num_factors == small.num_factors == 5
    assert full.factor_names == ("shape", "scale", "orientation", "position_x", "position_y")
    assert full.observation_shape == (64, 64, 1)
    np.testing.assert_allclose(full.values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(full.values[2], 2 * np.pi * np.arange(40) / 40)
    np.testing.assert_array_equal(full.values[3], np.arange(16, 48))
    np.testing.assert_allclose(small.values[1], [0.6, 0.8, 1.0])
    np.testing.assert_allclose(small.values[2], np.pi / 4 * np.arange(8))
    np.testing.assert_array_equal(small.values[4], [18, 22, 26, 30, 34, 38, 42, 46])
    with pytest.raises(ValueError, match="unknown shapes grid 'dsprites'"):
        Shapes("dsprites")


def test_index_factors_round_trip_in_c_order():
    data = Shapes("shapes")
    f = data.index_to_factors([0, 1, 32, 1024, 40 * 1024, 6 * 40 * 1024, len(data) - 1])
    np.testing.assert_array_equal(f, [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0],
                                      [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                      [2, 5, 39, 31, 31]])
    assert f.dtype == np.int64
    idx = np.random.default_rng(0).integers(len(data), size=1000)
    np.testing.assert_array_equal(data.factors_to_index(data.index_to_factors(idx)), idx)
    with pytest.raises(IndexError, match="indices must be in 0..737279"):
        data.index_to_factors([len(data)])
    with pytest.raises(IndexError, match="orientation indices must be in 0..39"):
        data.factors_to_index([[0, 0, 40, 0, 0]])
    with pytest.raises(ValueError, match=r"factors must be \(N, 5\)"):
        data.images(np.zeros((2, 4), int))


def test_small_grid_is_a_subgrid_of_the_full_grid(small_images):
    small, full = Shapes("shapes_small"), Shapes("shapes")
    f = small.index_to_factors(np.arange(0, len(small), 7))
    in_full = np.stack([np.asarray(shapes.SMALL_SUBGRID[i])[f[:, i]] for i in range(5)], axis=1)
    for i in range(5):
        np.testing.assert_array_equal(small.values[i][f[:, i]], full.values[i][in_full[:, i]])
    np.testing.assert_array_equal(full.images(in_full), small_images[::7])


# ------------------------------------------------------------------------ hand-checkable images

@pytest.mark.parametrize("scale, side", [(0.5, 10), (0.6, 12), (1.0, 20)])
def test_axis_aligned_square_covers_exactly_its_pixels(scale, side):
    # centre 32: pixel centres j + 0.5 with |j + 0.5 - 32| <= side / 2, i.e. j in 32 +- side/2
    img = render(SQUARE, scale, 0.0, 32.0, 32.0)[0]
    want = np.zeros((64, 64), bool)
    want[32 - side // 2:32 + side // 2, 32 - side // 2:32 + side // 2] = True
    np.testing.assert_array_equal(img, want)
    assert img.sum() == side * side


def test_quarter_turn_of_a_square_is_the_same_image():
    angles = 2 * np.pi * np.arange(40) / 40
    imgs = render(SQUARE, 0.8, angles, 25.0, 40.0)
    for k in range(30):  # orientation index k and k + 10 are a quarter turn apart
        np.testing.assert_array_equal(imgs[k], imgs[k + 10])
    assert imgs[0].sum() == 256 and not np.array_equal(imgs[0], imgs[5])  # 45 degrees differs


def test_half_turn_of_an_ellipse_is_the_same_image_and_a_heart_is_not():
    ell = render(ELLIPSE, 1.0, [0.3, 0.3 + np.pi], 30.0, 30.0)
    np.testing.assert_array_equal(ell[0], ell[1])
    heart = render(HEART, 1.0, [0.0, np.pi], 32.0, 32.0)
    assert not np.array_equal(heart[0], heart[1])
    np.testing.assert_array_equal(heart[1], heart[0][::-1, ::-1])  # a half turn about (32, 32)


def test_shape_geometry_at_orientation_zero():
    h = 10.0
    ell = render(ELLIPSE, 1.0, 0.0, 32.0, 32.0)[0]
    rows, cols = np.nonzero(ell)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (22, 41, 27, 36)  # 2h wide, h high
    assert abs(ell.sum() - np.pi * h * h / 2) < 0.03 * np.pi * h * h / 2
    heart = render(HEART, 1.0, 0.0, 32.0, 32.0)[0]
    assert abs(heart.sum() - 3.66 * h * h) < 0.03 * 3.66 * h * h  # area of the unit heart: 3.66
    rows, cols = np.nonzero(heart)
    # the tip points down: 1.29 h below the centre, the lobes 0.94 h above
    assert (rows.max() + 0.5 - 32, 32 - rows.min() - 0.5) == (11.5, 8.5)
    np.testing.assert_array_equal(heart, heart[:, ::-1])  # mirror-symmetric about column 32
    square45 = render(SQUARE, 1.0, np.pi / 4, 32.0, 32.0)[0]
    # A diamond of area 400. Pixel centres are (dx, dy) = half-integer offsets; inside means
    # |dx + dy| and |dx - dy| <= 10 sqrt(2) = 14.14, and m = dx + dy, n = dx - dy are integers
    # of opposite parity in -14..14: 2 x 15 x 14 = 420 pixels.
    assert square45.sum() == 420


def test_rotation_is_counter_clockwise_on_screen():
    # An ellipse turned by +30 degrees rises to the right: 8 px along its long axis from the
    # centre, up-right and down-left are inside; the mirror points up-left and down-right are not.
    img = render(ELLIPSE, 1.0, np.pi / 6, 32.0, 32.0)[0]
    assert img[28, 38] and img[36, 25] and not img[28, 25] and not img[36, 38]


def test_translation_shifts_the_image():
    a, b = render(HEART, 0.7, 1.0, [20.0, 21.0], [30.0, 33.0])
    np.testing.assert_array_equal(np.roll(a, (3, 1), axis=(0, 1)), b)


def test_vectorised_render_matches_a_pixel_loop():
    data = Shapes("shapes")
    f = data.sample_factors(12, np.random.default_rng(5))
    f[:3, 0] = (SQUARE, ELLIPSE, HEART)
    got = data.images(f)
    for k, values in enumerate(zip(*data.factor_values(f))):
        np.testing.assert_array_equal(got[k], naive_render(*values), err_msg=f"factors {f[k]}")
    # off-grid values too: a sprite larger than the window heuristics and clipped by the border
    np.testing.assert_array_equal(render(SQUARE, 2.0, 0.3, 5.0, 60.0)[0],
                                  naive_render(SQUARE, 2.0, 0.3, 5.0, 60.0))
    with pytest.raises(ValueError, match="shape indices must be in 0..2"):
        render(3, 1.0, 0.0, 32.0, 32.0)


def test_small_grid_images(small_images):
    counts = small_images.sum(axis=(1, 2))
    assert small_images.dtype == bool and counts.min() > 0
    # nothing touches the border: no sprite is clipped
    border = small_images[:, [0, -1], :].any(axis=(1, 2)) | small_images[:, :, [0, -1]].any(axis=(1, 2))
    assert not border.any()
    # distinct images: squares repeat every 2 of the 8 orientations, ellipses every 4, hearts
    # never -> 3 scales x 64 positions x (2 + 4 + 8)
    assert len({im.tobytes() for im in small_images}) == 3 * 64 * 14


def test_rendering_is_deterministic():
    data = Shapes("shapes")
    f = data.index_to_factors(np.arange(0, len(data), 997))
    assert data.images(f).tobytes() == data.images(f).tobytes()


# -------------------------------------------------------------------------------- the sampler

@pytest.mark.parametrize("rng", [np.random.default_rng(0), np.random.RandomState(0)],
                         ids=["Generator", "RandomState"])
def test_sampler(rng):
    data = Shapes("shapes_small")
    factors, obs = data.sample(500, rng)
    assert factors.shape == (500, 5) and factors.dtype == np.int64
    assert (factors.min(0) == 0).all() and (factors.max(0) == np.array([2, 2, 7, 7, 7])).all()
    assert obs.shape == (500, 64, 64, 1) and obs.dtype == np.float32
    assert set(np.unique(obs)) == {0.0, 1.0}
    np.testing.assert_array_equal(obs[..., 0], data.images(factors))
    np.testing.assert_array_equal(data.sample_observations_from_factors(factors, rng), obs)


def test_sampler_is_reproducible_from_the_seed():
    data = Shapes("shapes")
    a = data.sample(64, np.random.RandomState(3))
    b = data.sample(64, np.random.RandomState(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].tobytes() == b[1].tobytes()


# --------------------------------------------------------------------------------- the splits

@pytest.mark.parametrize("name, n_train, n_test", [("shapes_small", 3687, 921),
                                                   ("shapes", 589_824, 147_456)])
def test_splits_partition_the_grid(name, n_train, n_test):
    train, test = shapes.split_indices(name, "train"), shapes.split_indices(name, "test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.dtype == test.dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n_train + n_test))
    np.testing.assert_array_equal(shapes.split_indices(name, "test"), test)  # deterministic


def test_load_arrays_shapes_small():
    ds = datasets.load_dataset_arrays("shapes_small", "train")
    assert ds.images.shape == (3687, 64, 64, 1) and ds.images.dtype == np.float32
    assert set(np.unique(ds.images)) == {0.0, 1.0}
    factors = datasets.load_factors("shapes_small", "train")
    assert factors.shape == (3687, 5) and factors.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, factors[:, 0])
    assert ds.labels.dtype == np.int64 and set(ds.labels) == {0, 1, 2}
    np.testing.assert_array_equal(ds.images[..., 0], Shapes("shapes_small").images(factors))
    assert ds.info == datasets.DataInfo(
        "shapes_small", "generated", "vaecommon.shapes:shapes_small", "train", 3687,
        "shapes_small: 3x3x8x8x8 factor grid (shape, scale, orientation, x, y), generated; "
        "every 5th image of a seed-0 permutation is test; labels are the shape")
    static = datasets.load_dataset_arrays("shapes_small", "train", binarization="static", limit=50)
    np.testing.assert_array_equal(static.images, ds.images[:50])  # a 0/1 image binarizes to itself


def test_load_arrays_full_grid_draws_only_the_limit():
    ds = datasets.load_dataset_arrays("shapes", "test", limit=20, source="generated")
    factors = datasets.load_factors("shapes", "test", limit=20)
    assert ds.images.shape == (20, 64, 64, 1) and ds.info.n == 20
    np.testing.assert_array_equal(ds.images[..., 0], Shapes("shapes").images(factors))


def test_load_errors():
    with pytest.raises(datasets.DataError, match="source='idx' cannot load shapes; it is only "
                                                 "'generated'"):
        datasets.load_dataset_arrays("shapes", source="idx", limit=1)
    with pytest.raises(datasets.DataError, match="dataset 'mnist' has no ground-truth factors"):
        datasets.load_factors("mnist")
    with pytest.raises(datasets.DataError, match="limit=0 must be None or a positive integer"):
        datasets.load_factors("shapes_small", limit=0)
