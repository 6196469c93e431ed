"""Sample grids as PNG files and TensorBoard images."""

import numpy as np
import tensorflow as tf

from keras_pixelcnn.model_dir import atomic_write


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


def write_png(path, grid):
    """Writes a uint8 [H, W, C] image as PNG, atomically."""
    atomic_write(path, tf.io.encode_png(grid).numpy())
