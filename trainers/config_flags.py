"""absl flags made from a config dataclass's fields (TrainConfig, VQVAEConfig); the config a command line asks for.

Each field's name, type, default and help are written once, in trainers/config.py;
``define_config_flags`` turns them into flags (an enum where the field lists its
choices). The settings several binaries share (--dataset, --data_dir, --seed,
--jit_compile) are defined by common_flags.py through the same function.
"""

import dataclasses
import typing

from absl import flags

from trainers.config import PRESETS, TrainConfig

FLAGS = flags.FLAGS

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def _flag_fields(config_class=TrainConfig):
    """A config dataclass's fields that are flags (those with help), in declaration order."""
    return [field for field in dataclasses.fields(config_class) if "help" in field.metadata]


def define_config_flags(names=None, exclude=(), config_class=TrainConfig, prefix=""):
    """Defines a flag --<prefix><field> for each field of ``config_class`` in ``names`` (None: all) not in ``exclude``.

    ``prefix`` keeps another binary's settings apart (--vq_filters beside trainers.train's --filters).
    """
    for field in _flag_fields(config_class):
        if (names is not None and field.name not in names) or field.name in exclude:
            continue
        kind = next((t for t in typing.get_args(field.type) if t is not type(None)), field.type)  # Optional[T] -> T
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(prefix + field.name, field.default, list(choices), help_text)
        else:
            _DEFINE[kind](prefix + field.name, field.default, help_text)


def config_from_flags(config_class=TrainConfig, prefix=""):
    """--config's preset (TrainConfig) or ``config_class()``, with every flag given on the command line applied.

    A field is read from --<prefix><field>, or from the shared flag --<field> when that is what was defined.
    """
    base = PRESETS[FLAGS.config] if config_class is TrainConfig and FLAGS.config else config_class()
    given = {}
    for field in _flag_fields(config_class):
        name = prefix + field.name if prefix + field.name in FLAGS else field.name
        if FLAGS[name].present:
            given[field.name] = FLAGS[name].value
    return dataclasses.replace(base, **given)
