r"""Trains a VQ-VAE, the first stage of a code prior: ``python -m trainers.train_vqvae --model_dir=DIR``.

    python -m trainers.train_vqvae --model_dir=/tmp/vq                      # the embedded digits, seconds
    python -m trainers.train --latents=/tmp/vq --model_dir=/tmp/prior       # a class-conditional prior on its codes

The VQ-VAE's flags are prefixed --vq_ (--vq_num_embeddings, --vq_embedding_dim,
--vq_filters, --vq_downsample, --vq_decoder_likelihood, --vq_epochs, --vq_batch_size, --vq_learning_rate);
--dataset, --data_dir and --seed are shared with trainers.train. Re-running the
same command resumes an unfinished run (Keras's BackupAndRestore) or says it is done;
with a larger --vq_epochs it continues a finished run from its saved model.
From Python: trainers.vqvae_lib.train_vqvae(VQVAEConfig(...), model_dir).
"""

from absl import flags, logging

from trainers import binary, common_flags
from trainers.config import VQVAEConfig
from trainers.config_flags import config_from_flags, define_config_flags

FLAGS = flags.FLAGS
define_config_flags(exclude=common_flags.SHARED_SETTINGS, config_class=VQVAEConfig, prefix="vq_")


@binary.checked(required=("model_dir",))
def main(argv):
    from trainers.vqvae_lib import train_vqvae

    metrics = train_vqvae(config_from_flags(VQVAEConfig, prefix="vq_"), FLAGS.model_dir)
    logging.info("VQ-VAE in %s: %s", FLAGS.model_dir, metrics)


def run():
    binary.run(main)


if __name__ == "__main__":
    run()
