"""keras-pixelcnn: Gated and Conditional PixelCNN (van den Oord et al. 2016) for Keras 3."""
from setuptools import find_packages, setup

TRAIN = [
    "tensorboard~=2.21.0",
    "tensorflow-datasets~=4.9.10",
    "importlib_resources>=6",  # used by tfds 4.9.10, not declared by it
    "scikit-learn>=1.5,<2",
]

setup(
    name="keras-pixelcnn",
    version="0.1.0",
    description="Gated / Conditional PixelCNN decoders as Keras 3 layers and models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["keras_pixelcnn", "keras_pixelcnn.*", "trainers", "export"]),
    # Core: the layers, models and export. Training extras: pip install "keras-pixelcnn[train]".
    install_requires=[
        # Tested with exactly these minor versions (see BUILD_NOTES.md).
        "keras>=3.15.1,<3.16",
        "numpy>=1.26,<2.5",
        "tensorflow~=2.21.0",
        # tensorflow-probability imports tf_keras at import time.
        "tf-keras~=2.21.0",
        "tensorflow-probability~=0.25.0",
        # the binaries' flags (export, clients) and the trainers' logging.
        "absl-py>=2.1,<3",
        # export/: warm-up requests and the gRPC client.
        "tensorflow-serving-api~=2.21.0",
        "grpcio>=1.24.3,<2",
    ],
    entry_points={
        "console_scripts": [
            "pixelcnn-train=trainers.train:run",
            "pixelcnn-evaluate=trainers.evaluate:run",
            "pixelcnn-sample=trainers.sample:run",
            "pixelcnn-embedding-model=trainers.embedding_model:run",
            "pixelcnn-export=export.export:run",
            "pixelcnn-grpc-client=export.grpc_client:run",
            "pixelcnn-rest-client=export.rest_client:run",
        ],
    },
    extras_require={
        # trainers/: TensorBoard summaries, tfds data sets, the embedded digits.
        "train": TRAIN,
        "test": TRAIN + ["pytest>=8,<10", "pytest-xdist==3.8.0", "jax==0.10.2", "jaxlib==0.10.2", "ruff==0.17.6"],
    },
)
