r"""Trains a small embedding network and saves it for ``--conditioning=embedding``.

    python -m trainers.embedding_model --embedding_out=/tmp/digits_embedding.keras
    python -m trainers.train --conditioning=embedding --embedding_model=/tmp/digits_embedding.keras \
        --model_dir=/tmp/pixelcnn-embedding

The paper (section 3.3) conditions a PixelCNN on the embeddings of a network
trained for another task (face recognition, with a triplet loss). This is the
same idea at the scale of the embedded data: a small convolutional classifier
trained on the class labels of --dataset (default: the 8x8 digits); its
penultimate layer, ``--embedding_dim`` floats, is the embedding. Only the
embedding part is saved (a functional Keras model: float32 images with values
0..255 [B, H, W, C] -> [B, --embedding_dim]); the classifier layer is dropped.
Its flags have their own names (--embedding_out, --classifier_*) so that the
binaries' flags can live in one process.
Any other Keras model with that contract works with the trainer too.
"""


from absl import app, flags, logging

from trainers import binary, common_flags  # noqa: F401  (--dataset, --data_dir, --seed)

FLAGS = flags.FLAGS
flags.DEFINE_string("embedding_out", None, "Where to save the embedding model (a .keras file).")
flags.DEFINE_integer("embedding_dim", 16, "Size of the embedding vectors.")
flags.DEFINE_integer("classifier_steps", 300, "Classifier training steps.")
flags.DEFINE_integer("classifier_batch_size", 64, "Classifier batch size.")
flags.DEFINE_float("classifier_learning_rate", 3e-3, "Classifier Adam learning rate.")


def embedding_network(image_shape, embedding_dim, filters=16):
    """images 0..255 [B, H, W, C] -> embeddings [B, embedding_dim].

    Rescale, two 3x3 convolutions (the second with stride 2), Dense, L2 normalisation.

    Args:
      image_shape: (H, W, C).
      embedding_dim: size of the embedding.
      filters: width of the first convolution (the second has twice as many).

    Returns:
      A functional ``keras.Model`` named "embedding".
    """
    import keras

    inputs = keras.Input(tuple(image_shape), dtype="float32", name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv_0")(x)
    x = keras.layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(embedding_dim, name="dense")(x)
    # On the unit sphere, as face embeddings are (FaceNet): a bounded condition for the PixelCNN's gates.
    embedding = keras.layers.UnitNormalization(name="normalize")(x)
    return keras.Model(inputs, embedding, name="embedding")


def train_embedding_model(dataset, embedding_dim, train_steps, batch_size, learning_rate, seed, data_dir=None):
    """Trains ``embedding_network`` with a linear classifier on the labels of ``dataset``.

    Args:
      dataset: a data set name with labels (trainers/data.py).
      embedding_dim: size of the embedding.
      train_steps: optimizer steps.
      batch_size: examples per step.
      learning_rate: Adam learning rate.
      seed: initialisation and data order.
      data_dir: tfds data directory.

    Returns:
      (the embedding model, test accuracy of the classifier).
    """
    import keras
    import tensorflow as tf

    from trainers.data import eval_pipeline, open_dataset, train_pipeline

    spec = open_dataset(dataset, data_dir)
    if spec.num_classes is None:
        raise ValueError(f"dataset={dataset}: has no labels to train the embedding on.")
    keras.utils.set_random_seed(seed)
    embedding = embedding_network(spec.image_shape, embedding_dim)
    logits = keras.layers.Dense(spec.num_classes, name="classifier")(embedding.output)
    classifier = keras.Model(embedding.input, logits)
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def as_float(images, labels):  # the embedding contract: float32 values 0..255
        return tf.cast(images, tf.float32), labels

    train = train_pipeline(spec, batch_size, seed).map(as_float)
    classifier.fit(train, steps_per_epoch=train_steps, epochs=1, shuffle=False, verbose=0)  # shuffled by the pipeline
    _, accuracy = classifier.evaluate(eval_pipeline(spec, batch_size).map(as_float), verbose=0)
    return embedding, float(accuracy)


@binary.checked()
def main(argv):
    from trainers.model_dir import save_keras_file

    if not FLAGS.embedding_out or not FLAGS.embedding_out.endswith(".keras"):
        raise app.UsageError(f"--embedding_out: expected a path ending in .keras, got {FLAGS.embedding_out!r}.")
    for name in ("embedding_dim", "classifier_steps", "classifier_batch_size"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name}: expected an int >= 1, got {FLAGS[name].value}.")
    embedding, accuracy = train_embedding_model(
        FLAGS.dataset,
        FLAGS.embedding_dim,
        FLAGS.classifier_steps,
        FLAGS.classifier_batch_size,
        FLAGS.classifier_learning_rate,
        FLAGS.seed,
        FLAGS.data_dir,
    )  # fmt: skip
    save_keras_file(embedding, FLAGS.embedding_out)
    logging.info(
        "Saved a %d-d embedding to %s (classifier test accuracy %.3f).",
        FLAGS.embedding_dim,
        FLAGS.embedding_out,
        accuracy,
    )


def run():
    binary.run(main)


if __name__ == "__main__":
    run()
