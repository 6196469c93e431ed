"""absl flags made from TrainConfig's fields, and the TrainConfig the command line asks for.

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


def _flag_fields():
    """TrainConfig's fields that are flags (those with help), in declaration order."""
    return [field for field in dataclasses.fields(TrainConfig) if "help" in field.metadata]


def define_config_flags(names=None, exclude=()):
    """Defines a flag for each TrainConfig field in ``names`` (None: every one) not in ``exclude``."""
    for field in _flag_fields():
        if (names is not None and field.name not in names) or field.name in exclude:
            continue
        kind = next((t for t in typing.get_args(field.type) if t is not type(None)), field.type)  # Optional[T] -> T
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(field.name, field.default, list(choices), help_text)
        else:
            _DEFINE[kind](field.name, field.default, help_text)


def config_from_flags():
    """The preset of --config (else TrainConfig's defaults) with every flag given on the command line applied."""
    base = PRESETS[FLAGS.config] if FLAGS.config else TrainConfig()
    given = {field.name: FLAGS[field.name].value for field in _flag_fields() if FLAGS[field.name].present}
    return base.replace(**given)
