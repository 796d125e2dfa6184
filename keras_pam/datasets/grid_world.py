"""The grid the generated world is drawn on: one object per ViT patch.

A small ViT perceives what one of its patches shows far more cheaply than
what spreads over several: a shape or a glyph cut by patch borders has to
be assembled across tokens, and the tiny base learns that slowly. So every
object a generated question is about is drawn whole inside one cell of a
grid whose cells are the model's patches (`image_size // patch_size` cells
a side), jittered by a few pixels inside its cell. The image stays an
ordinary RGB image: the grid is only where things are drawn.
"""

import dataclasses

import numpy as np

DEFAULT_IMAGE_SIZE = 64
DEFAULT_PATCH_SIZE = 16
MIN_PATCH_SIZE = 8
# Five objects in distinct cells, an arrow that spans a cell, a shape that
# moves one cell a frame on a wrap-around grid: three cells a side at least.
MIN_CELLS = 3


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells of an image that coincide with a ViT's patches.

    Args:
        image_size: int. Side of the square image, in pixels. Defaults to
            `64`.
        patch_size: int. Side of a patch (a cell), in pixels; it must
            divide `image_size`. Defaults to `16`.

    Example:

    ```python
    import numpy as np
    from keras_pam.datasets.grid_world import Grid

    grid = Grid(64, 16)
    cx, cy = grid.centre(np.random.default_rng(0), cell=5, radius=6)
    assert grid.cells == 4 and 16 <= cx < 32 and 16 <= cy < 32
    ```
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    patch_size: int = DEFAULT_PATCH_SIZE

    def __post_init__(self):
        size, patch = self.image_size, self.patch_size
        for key, value in (("image_size", size), ("patch_size", patch)):
            if isinstance(value, bool) or not isinstance(
                value, (int, np.integer)
            ):
                raise ValueError(f"{key} must be an int, got {value!r}.")
        if patch < MIN_PATCH_SIZE:
            raise ValueError(
                f"patch_size must be >= {MIN_PATCH_SIZE} (a shape or a digit "
                f"is drawn whole inside one patch), got {patch}."
            )
        if size % patch or size // patch < MIN_CELLS:
            raise ValueError(
                f"image_size {size} must be a multiple of patch_size {patch} "
                f"with at least {MIN_CELLS} patches a side: the world's "
                "objects are drawn in cells that coincide with the ViT's "
                "patches, up to five of them in different cells."
            )

    @property
    def cells(self):
        """Cells (patches) along one side."""
        return self.image_size // self.patch_size

    @property
    def num_cells(self):
        """All cells of the image."""
        return self.cells * self.cells

    @property
    def max_radius(self):
        """The largest shape radius drawn whole inside a cell."""
        return self.patch_size // 2 - 1

    def radius(self, rng, low, high):
        """A radius between fractions `low` and `high` of a cell's side.

        At least 3 pixels: below that a circle and a cross are the same
        pixels.
        """
        lo = min(self.max_radius, max(3, round(low * self.patch_size)))
        hi = min(self.max_radius, max(lo, round(high * self.patch_size)))
        return int(rng.integers(lo, hi + 1))

    def row_column(self, cell):
        """`(row, column)` of a cell numbered row by row from the top left."""
        return divmod(int(cell), self.cells)

    def centre(self, rng, cell, radius):
        """A jittered centre that keeps a shape of `radius` in its cell."""
        if radius > self.max_radius:
            raise ValueError(
                f"A shape of radius {radius} does not fit a "
                f"{self.patch_size}-pixel cell (at most {self.max_radius})."
            )
        row, column = self.row_column(cell)
        half = self.patch_size // 2
        jitter = max(0, min(self.patch_size // 8, half - 1 - radius))
        dx, dy = rng.integers(-jitter, jitter + 1, size=2)
        return (
            column * self.patch_size + half + int(dx),
            row * self.patch_size + half + int(dy),
        )

    def box(self, rng, cell, height, width):
        """`(top, left)` of a `height x width` block jittered in `cell`."""
        row, column = self.row_column(cell)
        if height > self.patch_size or width > self.patch_size:
            raise ValueError(
                f"A {height}x{width} block does not fit a "
                f"{self.patch_size}-pixel cell."
            )
        top = row * self.patch_size + int(
            rng.integers(0, self.patch_size - height + 1)
        )
        left = column * self.patch_size + int(
            rng.integers(0, self.patch_size - width + 1)
        )
        return top, left

    def distinct_cells(self, rng, count, accept=None, tries=200):
        """`count` different cells, optionally satisfying `accept(cells)`."""
        for _ in range(tries):
            cells = [int(c) for c in rng.choice(self.num_cells, count, False)]
            if accept is None or accept(cells):
                return cells
        raise RuntimeError(
            f"Could not choose {count} cells of a {self.cells}x{self.cells} "
            "grid that satisfy the constraint."
        )

    def side(self, cell, horizontal):
        """Which half a cell lies in: `"left"`/`"right"` or `"top"`/
        `"bottom"`."""
        row, column = self.row_column(cell)
        index = column if horizontal else row
        first = index < self.cells / 2
        if horizontal:
            return "left" if first else "right"
        return "top" if first else "bottom"


def check_tasks_fit_model(tasks, backbone):
    """Refuse generated tasks drawn for another image or patch size.

    A task drawn on another grid would train and score, but its objects
    would straddle the model's patches (or its images fail later, mid-run):
    this says so before anything trains. Tasks that record no size (loaded
    data, `Task.image_size is None`) pass.

    Args:
        tasks: iterable of `keras_pam.datasets.Task`.
        backbone: `keras_hub.models.PaliGemmaBackbone`. The model's
            backbone (its `image_size` and `vit_patch_size`).

    Raises:
        ValueError: a task's `image_size` or `patch_size` differs from the
            backbone's; the message names the task, both grids and the
            call that draws the task for the model.

    Example:

    ```python
    from keras_pam import datasets
    from keras_pam.datasets.grid_world import check_tasks_fit_model

    suite = datasets.make_suite(
        image_size=backbone.image_size, patch_size=backbone.vit_patch_size
    )
    check_tasks_fit_model(suite, backbone)
    ```
    """
    size, patch = backbone.image_size, backbone.vit_patch_size
    for task in tasks:
        drawn = (
            getattr(task, "image_size", None),
            getattr(task, "patch_size", None),
        )
        if drawn[0] is not None and drawn[0] != size:
            problem = f"{drawn[0]}x{drawn[0]} images"
        elif drawn[1] is not None and drawn[1] != patch:
            problem = f"{drawn[1]}-pixel patches"
        else:
            continue
        raise ValueError(
            f"Task {task.name!r} was drawn for {problem}, but the base "
            f"takes {size}x{size} images in {patch}-pixel patches. Draw it "
            f"for the base: make_task(..., image_size={size}, "
            f"patch_size={patch})."
        )
