"""keras-pixelcnn: Gated and Conditional PixelCNN decoders for Keras 3.

van den Oord et al., "Conditional Image Generation with PixelCNN Decoders"
(NeurIPS 2016). Layers use keras.ops (they also run under the JAX backend);
the mixture likelihood and sampling use TensorFlow, imported lazily.
``export_saved_model`` (export_lib.py, TensorFlow at its top) is imported on
first use and needs the tensorflow backend.
"""

import keras

from keras_pixelcnn.autoencoder import (
    EmbeddingConditionedPixelCNN,
    PixelCNNAutoEncoder,
    default_encoder,
    interpolation_conditions,
)
from keras_pixelcnn.blocks import GatedBlock, MaskedBlock, gate, shift_down
from keras_pixelcnn.conditioning import ConditionNetwork
from keras_pixelcnn.heads import HEADS, LogisticMixtureHead, SoftmaxHead, make_head
from keras_pixelcnn.likelihood_model import LikelihoodModel
from keras_pixelcnn.masked_conv import MaskedConv2D, causal_mask
from keras_pixelcnn.model import ConditionalPixelCNN, PixelCNN, PixelCNNBase
from keras_pixelcnn.vqvae import VQVAE, VectorQuantizer, VQVAEPrior

__version__ = "0.1.0"


def __getattr__(name):
    """``export_saved_model``, imported on first use: a TensorFlow SavedModel needs the tensorflow backend."""
    if name != "export_saved_model":
        raise AttributeError(f"module 'keras_pixelcnn' has no attribute {name!r}")
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"export_saved_model: needs the tensorflow backend (KERAS_BACKEND=tensorflow); "
            f"this process runs {keras.backend.backend()!r}."
        )
    from keras_pixelcnn.export_lib import export_saved_model

    return export_saved_model

__all__ = [
    "ConditionalPixelCNN",
    "ConditionNetwork",
    "EmbeddingConditionedPixelCNN",
    "GatedBlock",
    "HEADS",
    "LikelihoodModel",
    "LogisticMixtureHead",
    "MaskedBlock",
    "MaskedConv2D",
    "PixelCNN",
    "PixelCNNAutoEncoder",
    "PixelCNNBase",
    "SoftmaxHead",
    "VQVAE",
    "VQVAEPrior",
    "VectorQuantizer",
    "causal_mask",
    "default_encoder",
    "gate",
    "interpolation_conditions",
    "make_head",
    "shift_down",
]
