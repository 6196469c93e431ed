"""Training, evaluation and sampling binaries for keras_pixelcnn models (absl flags)."""
