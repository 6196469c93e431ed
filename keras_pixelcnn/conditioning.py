"""The conditioning input h of p(x | h), and its location-dependent map s = m(h).

Global conditioning (paper eq. 4) adds V^T h to every gate; location-dependent
conditioning (eq. 5) first maps h to s = m(h), a feature map with the image's
height and width, through a small deconvolutional network, and adds V * s
(a 1x1 convolution). Both additions are ``keras.layers.Dense`` layers in the
blocks (a Dense on the last axis of s is a 1x1 convolution), so this module only
turns the raw condition into h, or into s.
"""

import math

import keras
from keras import ops

from keras_pixelcnn.validation import check_image_shape, check_optional_positive_int, check_positive_int


@keras.saving.register_keras_serializable(package="keras_pixelcnn")
class ConditionNetwork(keras.layers.Layer):
    """Raw condition -> h [B, D] (global) or s [B, H, W, spatial_channels].

    Args:
      image_shape: (H, W, C) of the modelled images.
      num_classes: if set, the raw condition is integer class ids [B] and h is
        their one-hot encoding [B, num_classes]; otherwise it is a float vector
        [B, D] used as h directly.
      spatial: if True, return s = m(h): a Dense layer to a (ceil(H/4),
        ceil(W/4)) grid, two stride-2 transposed convolutions, cropped to H x W.
      spatial_channels: feature maps of s.

    Call:
      ``network(condition)`` with class ids [B] or floats [B, D] returns h
      [B, num_classes or D], or s [B, H, W, spatial_channels] with ``spatial=True``.
    """

    def __init__(self, image_shape, num_classes=None, spatial=False, spatial_channels=32, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = check_image_shape(image_shape)
        self.num_classes = check_optional_positive_int(num_classes, "num_classes")
        self.spatial = bool(spatial)
        self.spatial_channels = check_positive_int(spatial_channels, "spatial_channels")
        if self.spatial:
            height, width, _ = self.image_shape
            self._grid = (math.ceil(height / 4), math.ceil(width / 4))
            self.seed_dense = keras.layers.Dense(
                self._grid[0] * self._grid[1] * self.spatial_channels, name="seed", dtype=self.dtype_policy
            )
            # Attributes, not a list: Keras 3 lists are invisible to tf.train.Checkpoint.
            self.deconv_0, self.deconv_1 = (
                keras.layers.Conv2DTranspose(
                    self.spatial_channels, 3, strides=2, padding="same", name=f"deconv_{i}", dtype=self.dtype_policy
                )
                for i in range(2)
            )

    def build(self, condition_shape):
        if not self.spatial:
            return
        depth = self.num_classes if self.num_classes is not None else int(condition_shape[-1])
        self.seed_dense.build((None, depth))
        grid_shape = (None,) + self._grid + (self.spatial_channels,)
        for deconv in (self.deconv_0, self.deconv_1):
            deconv.build(grid_shape)
            grid_shape = deconv.compute_output_shape(grid_shape)

    def compute_output_shape(self, condition_shape):
        """h [B, num_classes or D], or s [B, H, W, spatial_channels]."""
        if self.spatial:
            height, width, _ = self.image_shape
            return (condition_shape[0], height, width, self.spatial_channels)
        depth = self.num_classes if self.num_classes is not None else condition_shape[-1]
        return (condition_shape[0], depth)

    def call(self, condition):
        if self.num_classes is not None:
            h = ops.one_hot(ops.cast(condition, "int32"), self.num_classes, dtype=self.compute_dtype)
        else:
            h = ops.cast(condition, self.compute_dtype)
        if not self.spatial:
            return h
        s = ops.reshape(self.seed_dense(h), (-1,) + self._grid + (self.spatial_channels,))
        for deconv in (self.deconv_0, self.deconv_1):
            s = deconv(ops.relu(s))
        height, width, _ = self.image_shape
        return s[:, :height, :width, :]

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=self.image_shape,
            num_classes=self.num_classes,
            spatial=self.spatial,
            spatial_channels=self.spatial_channels,
        )
        return config
