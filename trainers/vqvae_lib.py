"""The first stage of a code prior: ``train_vqvae(config, model_dir)`` trains a VQ-VAE, and
``latent_dataset(vqvae_dir)`` turns its data set into grids of codes for the prior (stage two).

    <vqvae_dir>/model.keras       the trained VQVAE
    <vqvae_dir>/run_config.json   VQVAEConfig (its data set, which the prior's codes come from)
    <vqvae_dir>/metrics.json      test reconstruction error and codebook use
    <vqvae_dir>/backup/           Keras's BackupAndRestore state while training (a rerun resumes)

Then ``python -m trainers.train --latents=<vqvae_dir>`` trains a ConditionalPixelCNN with
``num_categories`` = the codebook's size on the codes (labels kept), and its sample
grids and ``trainers.sample`` decode through the VQ-VAE.
"""

import dataclasses
import json
import os

import keras
import numpy as np
from absl import logging

from trainers import data as data_lib
from trainers import model_dir as layout


def split_arrays(data, split):
    """(images uint8 [N, H, W, C], labels int32 [N]) of an ImageData's split, in order."""
    images, labels = zip(*[(image.numpy(), label.numpy()) for image, label in data.split(split)])
    return np.stack(images), np.asarray(labels, np.int32)


def train_vqvae(config, model_dir, callbacks=()):
    """Trains (or resumes, or extends) the VQ-VAE of ``config`` in ``model_dir``; returns metrics.json's content.

    An interrupted run resumes at its last finished epoch (Keras's BackupAndRestore); a finished
    run asked for more ``epochs`` continues from its saved model and optimizer; one trained for
    as many or more is left alone. Any other setting must match the run's run_config.json.
    ``callbacks``: more Keras callbacks for ``fit`` (one that stops training early ends the run there).
    """
    _check_same_run(config, model_dir)
    done = layout.read_json(os.path.join(model_dir, layout.METRICS))  # written last: the run finished
    if done is not None and done["epochs"] >= config.epochs:
        logging.info("The VQ-VAE in %s is trained for %d epochs: nothing to do.", model_dir, done["epochs"])
        return done
    data = data_lib.open_dataset(config.dataset, config.data_dir)
    (train, _), (test, _) = split_arrays(data, "train"), split_arrays(data, "test")
    if done is not None:
        model, initial_epoch = load_vqvae(model_dir), done["epochs"]
    else:
        model, initial_epoch = _new_vqvae(config, data.image_shape), 0
    os.makedirs(model_dir, exist_ok=True)
    layout.atomic_write(os.path.join(model_dir, layout.RUN_CONFIG), json.dumps(dataclasses.asdict(config), indent=2))
    backup = keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup"))  # a rerun resumes its epoch
    history = model.fit(train, batch_size=config.batch_size, epochs=config.epochs, initial_epoch=initial_epoch,
                        callbacks=[backup, *callbacks], verbose=0)  # fmt: skip
    layout.save_model(model, model_dir)
    decoded = np.asarray(model.decode(model.encode(test)))
    metrics = dict(
        epochs=history.epoch[-1] + 1, dataset=config.dataset, train_loss=history.history["loss"][-1],
        test_mean_l1=float(np.abs(decoded.astype(float) - test).mean()), **model.codebook_usage(test),
    )  # fmt: skip
    layout.write_json(os.path.join(model_dir, layout.METRICS), metrics)
    return metrics


def _new_vqvae(config, image_shape):
    """A fresh, compiled VQVAE of ``config`` for images of ``image_shape``."""
    from keras_pixelcnn.vqvae import VQVAE

    keras.utils.set_random_seed(config.seed)
    model = VQVAE(
        image_shape, config.num_embeddings, config.embedding_dim, config.filters,
        config.resolved_downsample(image_shape), seed=config.seed, decoder_likelihood=config.decoder_likelihood,
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return model


def _check_same_run(config, model_dir):
    """Raises ValueError naming the settings that differ from ``model_dir``'s run_config.json (epochs may grow)."""
    recorded = layout.read_json(os.path.join(model_dir, layout.RUN_CONFIG))
    if recorded is None:
        return
    wanted = dataclasses.asdict(config)
    # A field the recorded run predates had its default then (decoder_likelihood: "mse").
    recorded = {field.name: recorded.get(field.name, field.default) for field in dataclasses.fields(config)}
    changed = sorted(name for name in wanted if name != "epochs" and recorded[name] != wanted[name])
    if changed:
        described = ", ".join(f"{name}={recorded[name]!r} there, {wanted[name]!r} here" for name in changed)
        raise ValueError(f"model_dir: {model_dir} holds a VQ-VAE run with other settings ({described}); "
                         "use a new model_dir.")  # fmt: skip


def load_vqvae(vqvae_dir):
    """The trained VQVAE of a ``train_vqvae`` directory."""
    import keras_pixelcnn  # noqa: F401  (registers VQVAE for load_model)

    path = os.path.join(vqvae_dir, layout.FINAL_MODEL)
    if not os.path.exists(path):
        raise ValueError(f"latents: no trained VQ-VAE in {vqvae_dir} (expected {path}; run trainers.train_vqvae).")
    return keras.models.load_model(path)


def latent_dataset(vqvae_dir):
    """The VQ-VAE's data set as code grids: (an ImageData of int32 codes [h, w, 1] with the labels, the VQVAE)."""
    vqvae = load_vqvae(vqvae_dir)
    recorded = layout.read_json(os.path.join(vqvae_dir, layout.RUN_CONFIG), {})
    data = data_lib.open_dataset(recorded.get("dataset", "digits"), recorded.get("data_dir"))
    parts = {}
    for split in ("train", "test"):
        images, labels = split_arrays(data, split)
        parts[split] = (np.asarray(vqvae.encode(images), np.int32), labels)
    return data_lib.in_memory(f"latents:{vqvae_dir}", parts["train"], parts["test"], data.num_classes), vqvae
