"""Procedural 2D sprites with known factors of variation, in the spirit of dSprites.

Framework-free (NumPy only) and generated on demand, so nothing is downloaded and the full grid
never has to sit in memory: `Shapes.index_to_factors` / `Shapes.factors_to_index` map between a
flat index and a factor tuple, `Shapes.images` rasterises any factor tuples, and
`Shapes.sample` draws `(factors, images)` for the disentanglement metrics
(`vaecommon.disentanglement`; `Shapes` is a `GroundTruthData`). `vaecommon.datasets` serves the
grids as the datasets "shapes" and "shapes_small" (`load_shapes_arrays`).

Factors, in flat-index order (C order, position_y varies fastest, as in dSprites' array):

=============  ==========================  ============================  =====================
factor         values                      "shapes" (737,280 images)     "shapes_small" (4,608)
=============  ==========================  ============================  =====================
shape          square, ellipse, heart      all 3                         all 3
scale          half-size 10 * scale px     6: 0.5, 0.6, ..., 1.0         3: 0.6, 0.8, 1.0
orientation    2 pi k / n rad, CCW         40: k = 0..39                 8: every 5th (k = 0, 5, ..)
position_x     centre column, px           32: 16, 17, ..., 47           8: 18, 22, ..., 46
position_y     centre row, px (downward)   32: 16, 17, ..., 47           8: 18, 22, ..., 46
=============  ==========================  ============================  =====================

"shapes_small" is a subgrid of "shapes": every one of its images is also a "shapes" image
(`Shapes.values` gives the values, `shapes_small` factor i of value index j is `shapes` value index
`SMALL_SUBGRID[i][j]`). Factors are integer indices into these value lists, the convention of
disentanglement_lib (`factors_num_values` gives the sizes).

Rasterisation (`render`): a 64 x 64 binary image; a pixel is on when its centre (column + 0.5,
row + 0.5) lies inside the shape (closed boundary, with a 1e-9 tolerance so that a centre exactly
on an edge is in whatever the rounding of cos and sin). With h = 10 * scale, in the shape's own frame
(origin at the shape's centre, v pointing up, rotated by the orientation counter-clockwise on
screen), the shapes are

- square: max(|u|, |v|) <= h (side 2h);
- ellipse: (u / h)^2 + (2 v / h)^2 <= 1 (semi-axes h and h / 2, the long one along u);
- heart: the implicit curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with x = u / h,
  y = v / h + HEART_CENTROID_Y (the curve's area centroid sits at the shape's centre; tip down).

Centres are whole pixels and, on the full grid, h is a whole number of pixels, so no pixel centre
lies on an axis-aligned square's edge: a scale-0.5 square covers exactly 10 x 10 = 100 pixels, and
a quarter turn gives the same image. Every shape fits in a circle of radius sqrt(2) h <= 14.2 px,
so no sprite on the grid is clipped by the image border.

How this differs from DeepMind's dSprites (github.com/deepmind/dsprites-dataset): the factor
grid has the same sizes (3 shapes, 6 scales in [0.5, 1], 40 orientations, 32 x 32 positions) and
the same flat order, but the pixels are not theirs. dSprites was drawn by a vector renderer whose
sprite sizes, ellipse aspect, heart outline and position range (their positions are "32 values in
[0, 1]" across most of the frame) we do not reproduce; here the geometry is the analytic one above
and positions span 32 px in the middle of the frame. Their README gives orientations as
"40 values in [0, 2 pi]"; here they are 2 pi k / 40 for k = 0..39, so no two orientations of a
heart are the same image. The symmetry quirks are shared by construction: a square repeats every
quarter turn and an ellipse every half turn, so for those shapes orientation is only identifiable
modulo pi/2 and pi (for "shapes_small", orientations k and k + 2 of a square and k and k + 4 of an
ellipse give identical images), which caps the disentanglement scores a perfect model can reach.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "IMAGE_SIZE", "SHAPE_NAMES", "FACTOR_NAMES", "HALF_SIZE", "HEART_CENTROID_Y", "GRIDS",
    "SMALL_SUBGRID", "SPLIT_SEED", "TEST_EVERY", "Grid", "Shapes", "render", "split_indices",
    "load_shapes_arrays",
]

IMAGE_SIZE = 64
SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
HALF_SIZE = 10.0
"""h = HALF_SIZE * scale pixels: a square's half-side, an ellipse's long semi-axis."""
HEART_CENTROID_Y = 0.2935
"""Area centroid of {(x^2 + y^2 - 1)^3 <= x^2 y^3} along y (numerical; its x is 0 by symmetry)."""
SPLIT_SEED = 0
"""The train/test split permutes the grid with `np.random.default_rng(SPLIT_SEED)`."""
TEST_EVERY = 5
"""Every 5th image of the permuted grid is test (20%), the rest train."""

_CHUNK = 1024  # images rasterised at once: (1024, 30, 30) float64 temporaries are 7 MB each


class Grid(NamedTuple):
    """The values of each factor, in `FACTOR_NAMES` order.

    Attributes:
      shape: indices into `SHAPE_NAMES`.
      scale: multipliers of `HALF_SIZE`.
      orientation: radians, counter-clockwise on screen.
      position_x: the centre's column, in pixels from the left edge.
      position_y: the centre's row, in pixels from the top edge.
    """

    shape: tuple[int, ...]
    scale: tuple[float, ...]
    orientation: tuple[float, ...]
    position_x: tuple[float, ...]
    position_y: tuple[float, ...]


def _full_grid() -> Grid:
    positions = tuple(16.0 + k for k in range(32))
    return Grid(shape=(0, 1, 2),
                scale=tuple((5 + k) / 10 for k in range(6)),
                orientation=tuple(2 * math.pi * k / 40 for k in range(40)),
                position_x=positions, position_y=positions)


SMALL_SUBGRID = ((0, 1, 2), (1, 3, 5), tuple(range(0, 40, 5)), tuple(range(2, 32, 4)),
                 tuple(range(2, 32, 4)))
"""For each factor, the "shapes" value indices that make up "shapes_small"."""


def _subgrid(grid: Grid, picks: tuple[tuple[int, ...], ...]) -> Grid:
    return Grid(*(tuple(values[i] for i in pick) for values, pick in zip(grid, picks)))


GRIDS: dict[str, Grid] = {
    "shapes": _full_grid(),
    "shapes_small": _subgrid(_full_grid(), SMALL_SUBGRID),
}
"""Factor grids by dataset name (see the module docstring's table)."""


# ----------------------------------------------------------------------------- rasterisation

# Pixel centres exactly on a boundary (e.g. an ellipse of h = 10 turned by 45 degrees has some)
# are inside whatever the last bit of cos and sin: without the tolerance, rounding would let a
# half turn of an ellipse differ from the unturned one.
_EPS = 1e-9


def _inside_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0 + _EPS


def _inside_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + 4.0 * v * v <= 1.0 + _EPS


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    y = v + HEART_CENTROID_Y
    r = u * u + y * y - 1.0
    return r * r * r - u * u * y * y * y <= _EPS


_INSIDE = (_inside_square, _inside_ellipse, _inside_heart)  # in SHAPE_NAMES order
_RADIUS = math.sqrt(2) + 1e-9  # every shape fits in the circle of radius sqrt(2) h


def render(shape, scale, orientation, position_x, position_y, *,
           size: int = IMAGE_SIZE) -> np.ndarray:
    """Rasterises sprites from factor *values* (not indices); arguments broadcast together.

    Args:
      shape: int indices into `SHAPE_NAMES`, (N,) or scalar.
      scale: multipliers of `HALF_SIZE`.
      orientation: radians, counter-clockwise on screen.
      position_x: centre column in pixels (pixel j spans [j, j + 1), its centre is j + 0.5).
      position_y: centre row in pixels, growing downwards.
      size: image height and width.

    Returns:
      bool (N, size, size): True where a pixel centre is inside the sprite (closed boundary).
    """
    shape, scale, orientation, px, py = (
        np.ravel(a) for a in np.broadcast_arrays(np.asarray(shape), np.asarray(scale, np.float64),
                                                 np.asarray(orientation, np.float64),
                                                 np.asarray(position_x, np.float64),
                                                 np.asarray(position_y, np.float64)))
    if shape.size and (shape.min() < 0 or shape.max() >= len(SHAPE_NAMES)):
        raise ValueError(f"shape indices must be in 0..{len(SHAPE_NAMES) - 1}")
    n = shape.size
    out = np.zeros((n, size, size), bool)
    centres = np.arange(size, dtype=np.float64) + 0.5
    # Python's libm cos/sin per distinct angle (few on a grid): the same bits on every NumPy build.
    angles, which = np.unique(orientation, return_inverse=True)
    cos_all = np.array([math.cos(a) for a in angles])[which]
    sin_all = np.array([math.sin(a) for a in angles])[which]
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        # Only a window around each sprite is tested: every shape lies inside the circle of
        # radius sqrt(2) h (the square's corners), so pixels outside it are never on.
        radius = _RADIUS * HALF_SIZE * float(scale[sl].max())
        w = min(size, 2 * math.ceil(radius) + 2)
        x0 = np.clip(np.floor(px[sl] - radius), 0, size - w).astype(np.int64)  # (B,)
        y0 = np.clip(np.floor(py[sl] - radius), 0, size - w).astype(np.int64)
        cols = x0[:, None] + np.arange(w)  # (B, W) pixel columns of each window
        rows = y0[:, None] + np.arange(w)  # (B, W) pixel rows
        h = (HALF_SIZE * scale[sl])[:, None, None]
        dx = ((cols + 0.5)[:, None, :] - px[sl, None, None]) / h  # (B, 1, W): right is +
        dy = (py[sl, None, None] - (rows + 0.5)[:, :, None]) / h  # (B, W, 1): up is + (rows go down)
        c, s = cos_all[sl, None, None], sin_all[sl, None, None]
        # Rotating the pixel by -orientation about the centre = rotating the sprite by +orientation.
        u = c * dx + s * dy  # (B, W, W)
        v = c * dy - s * dx
        on = np.zeros(u.shape, bool)
        for k, inside in enumerate(_INSIDE):
            mask = shape[sl] == k
            if mask.any():
                on[mask] = inside(u[mask], v[mask])
        b = np.arange(start, start + len(on))
        out[b[:, None, None], rows[:, :, None], cols[:, None, :]] = on
    return out


# ------------------------------------------------------------------------------------ Shapes

class Shapes:
    """One factor grid of the sprites: index <-> factors, factors -> images, and sampling.

    Implements disentanglement_lib's `GroundTruthData` interface (num_factors,
    factors_num_values, observation_shape, sample_factors, sample_observations_from_factors,
    sample, sample_observations), so `vaecommon.disentanglement` can evaluate on it. The random
    state is an explicit `np.random.Generator` or `np.random.RandomState`.

    Args:
      name: a key of `GRIDS` ("shapes" or "shapes_small").
    """

    def __init__(self, name: str = "shapes_small"):
        if name not in GRIDS:
            raise ValueError(f"unknown shapes grid {name!r}; choose from {tuple(GRIDS)}")
        self.name = name
        self.grid = GRIDS[name]
        # per factor, its values: shape indices, scales, radians, pixels, pixels
        self.values = tuple(np.asarray(v) for v in self.grid)
        self.factor_names = FACTOR_NAMES
        self.factors_num_values = tuple(len(v) for v in self.grid)
        self.num_factors = len(FACTOR_NAMES)
        self.observation_shape = (IMAGE_SIZE, IMAGE_SIZE, 1)

    def __len__(self) -> int:
        return math.prod(self.factors_num_values)

    def __repr__(self) -> str:
        return f"Shapes({self.name!r})  # {self.factors_num_values} = {len(self)} images"

    def index_to_factors(self, index) -> np.ndarray:
        """Flat indices (N,) -> factor indices int64 (N, 5), C order (position_y fastest)."""
        index = np.asarray(index, np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"{self.name} indices must be in 0..{len(self) - 1}")
        return np.stack(np.unravel_index(index, self.factors_num_values), axis=-1).astype(np.int64)

    def factors_to_index(self, factors) -> np.ndarray:
        """Factor indices (N, 5) -> flat indices int64 (N,); the inverse of `index_to_factors`."""
        factors = self._check(factors)
        return np.ravel_multi_index(tuple(factors.T), self.factors_num_values).astype(np.int64)

    def factor_values(self, factors) -> tuple[np.ndarray, ...]:
        """Factor indices (N, 5) -> the five value arrays (N,) that `render` takes."""
        factors = self._check(factors)
        return tuple(values[factors[:, i]] for i, values in enumerate(self.values))

    def images(self, factors) -> np.ndarray:
        """Factor indices (N, 5) -> bool images (N, 64, 64)."""
        return render(*self.factor_values(factors))

    # -- GroundTruthData --------------------------------------------------------------------

    def sample_factors(self, num: int, random_state) -> np.ndarray:
        """Uniform factor indices int64 (num, 5), each factor drawn independently."""
        return np.stack([_integers(random_state, n, num) for n in self.factors_num_values],
                        axis=-1).astype(np.int64)

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        """Factor indices (N, 5) -> float32 images (N, 64, 64, 1) of 0 and 1 (deterministic:
        `random_state` is unused, as for dSprites)."""
        return self.images(factors)[..., None].astype(np.float32)

    def sample(self, num: int, random_state) -> tuple[np.ndarray, np.ndarray]:
        """(factors int64 (num, 5), observations float32 (num, 64, 64, 1))."""
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num: int, random_state) -> np.ndarray:
        return self.sample(num, random_state)[1]

    def _check(self, factors) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must be (N, {self.num_factors}), got {factors.shape}")
        factors = factors.astype(np.int64)
        bad = (factors < 0) | (factors >= np.asarray(self.factors_num_values))
        if bad.any():
            i = int(np.argwhere(bad)[0, 1])
            raise IndexError(f"{FACTOR_NAMES[i]} indices must be in "
                             f"0..{self.factors_num_values[i] - 1} on {self.name}")
        return factors


def _integers(random_state, high: int, size: int) -> np.ndarray:
    """Uniform ints in [0, high) from a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state.integers(high, size=size)
    return random_state.randint(high, size=size)


# ---------------------------------------------------------------------------- dataset splits

def split_indices(name: str, split: str) -> np.ndarray:
    """The flat grid indices of one split, in dataset order (deterministic).

    The grid is permuted once with `np.random.default_rng(SPLIT_SEED)`; positions 4, 9, 14, ...
    of the permutation (every `TEST_EVERY`-th) are test and the others train, both kept in
    permutation order, so any prefix (`limit`) is a uniform sample of the grid.

    Returns:
      int64 (N,): "shapes" 589,824 train / 147,456 test; "shapes_small" 3,687 / 921.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not valid; choose from ('train', 'test')")
    n = len(Shapes(name))
    order = np.random.default_rng(SPLIT_SEED).permutation(n).astype(np.int64)
    is_test = np.arange(n) % TEST_EVERY == TEST_EVERY - 1
    return order[is_test] if split == "test" else order[~is_test]


def load_shapes_arrays(name: str, split: str, limit: int | None = None):
    """One split as `vaecommon.datasets` readers return it; only the first `limit` are drawn.

    Returns:
      (images uint8 (N, 64, 64, 1) of 0 and 255, labels int64 (N,) = the shape index,
      source description, split note). The factor indices are `load_factors`' job
      (`Shapes(name).index_to_factors(split_indices(name, split)[:limit])`).
    """
    data = Shapes(name)
    factors = data.index_to_factors(split_indices(name, split)[:limit])
    images = data.images(factors).astype(np.uint8)[..., None] * np.uint8(255)
    note = (f"{name}: {'x'.join(map(str, data.factors_num_values))} factor grid "
            f"(shape, scale, orientation, x, y), generated; every {TEST_EVERY}th image of a "
            f"seed-{SPLIT_SEED} permutation is test; labels are the shape")
    return images, factors[:, 0].copy(), f"vaecommon.shapes:{name}", note
