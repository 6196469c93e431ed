"""Sample grids as PNG files and TensorBoard images."""

import numpy as np
import tensorflow as tf

from trainers.model_dir import atomic_write


def image_grid(images, border=1, scale=1):
    """Tiles uint8 images [rows, cols, H, W, C] into one uint8 image with ``border``-pixel gaps.

    ``scale`` > 1 enlarges each pixel (nearest neighbour) so small images stay visible.
    """
    images = np.asarray(images)
    if scale > 1:
        images = images.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols, height, width, channels = images.shape
    grid = np.full(
        (rows * (height + border) + border, cols * (width + border) + border, channels), 255, np.uint8
    )
    for r in range(rows):
        for c in range(cols):
            top, left = border + r * (height + border), border + c * (width + border)
            grid[top : top + height, left : left + width] = images[r, c]
    return grid


def as_grey(values, num_categories=None):
    """uint8 images pass through (``num_categories`` None); codes in [0, K) become grey levels 0..255 for a PNG."""
    values = np.asarray(values)
    if num_categories is None:
        return values
    return np.round(values * (255.0 / (num_categories - 1))).astype(np.uint8)


def reconstruction_cells(inputs, reconstructions):
    """Cells [N, n + 2, H, W, C] of a reconstruction grid: the input, a blank (white) cell, its n reconstructions.

    Args:
      inputs: uint8 [N, H, W, C].
      reconstructions: uint8 [N, n, H, W, C].
    """
    inputs = np.asarray(inputs)
    blank = np.full_like(inputs, 255)
    return np.concatenate([inputs[:, None], blank[:, None], np.asarray(reconstructions)], axis=1)


def reconstruction_grid(inputs, reconstructions, border=1, scale=1):
    """One row per input: the input, a blank cell, then its reconstructions.

    The ``image_grid`` of ``reconstruction_cells``.
    """
    return image_grid(reconstruction_cells(inputs, reconstructions), border=border, scale=scale)


def write_png(path, grid):
    """Writes a uint8 [H, W, C] image as PNG, atomically."""
    atomic_write(path, tf.io.encode_png(grid).numpy())
