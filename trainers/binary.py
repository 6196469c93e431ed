"""How our command-line binaries start and fail: a quiet TensorFlow start-up and one-line usage errors.

``@binary.checked(required=...)`` gives a ``main`` the binaries' conventions
(no positional arguments, required flags, library errors that name a flag
raised as app.UsageError); ``binary.run(main)`` replaces ``absl.app.run(main)``
in every entry point. Nothing here runs on library import; the binaries' shared
flags module (common_flags.py) starts TensorFlow quietly when it is imported,
before the flags that take their choices from the library.

TensorFlow prints a start-up banner from C++ before its logging is set up
(twice: two of its shared libraries each print it), which no environment
variable silences, and on a machine without a GPU an ``E0000 ... failed call
to cuInit`` line that is no error there. ``quiet_tensorflow_startup`` imports
TensorFlow with file descriptor 2 captured and writes back every line that is
not that noise, and sets ``TF_CPP_MIN_LOG_LEVEL=1`` (unless set) so that C++ INFO
lines later on (XLA's compile notices) stay out too; warnings and errors are
kept. ``TF_CPP_MIN_LOG_LEVEL=0`` or ``--verbosity`` >= 1 keeps it all.
"""

import glob
import logging
import os
import re
import sys
import tempfile

from absl import app, flags

_BANNER = [
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
]
_NO_GPU = [r"failed call to cuInit"]  # only noise where the machine has no NVIDIA device


def _verbose(argv):
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return True
    for index, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith(("--verbosity=", "-v=")) else None
        if arg in ("--verbosity", "-v") and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None and value.lstrip("-").isdigit() and int(value) >= 1:
            return True
    return False


def quiet_tensorflow_startup(argv=None):
    """Imports TensorFlow and initialises its devices with the start-up noise filtered out of stderr."""
    if "tensorflow" in sys.modules or _verbose(sys.argv if argv is None else argv):
        return
    # C++ INFO lines after start-up (XLA's "Compiled cluster using XLA!", ...): warnings and errors stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    patterns = _BANNER + ([] if glob.glob("/dev/nvidia[0-9]*") else _NO_GPU)
    noise = re.compile("|".join(patterns))
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the platforms' initialisation (cuInit) happens here
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not noise.search(line):
                sys.stderr.write(line + "\n")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # TF's own INFO lines (checkpoint sharding, ...)


_NAME_BEFORE_VALUE = re.compile(r"(?<![\w\-/.])([a-z][a-z0-9_]*)(?=[=:])")


def usage_error(error):
    """An app.UsageError for a library error that starts with a flag's name ("name: ..." -> "--name: ...").

    Every defined flag's name in the message followed by ``=`` or ``:`` gets its
    ``--``. Re-raises ``error`` itself when the message does not start with a
    flag's name (an unexpected error keeps its traceback).
    """
    message, defined = str(error), flags.FLAGS
    first = _NAME_BEFORE_VALUE.match(message)
    if not first or first.group(1) not in defined:
        raise error
    return app.UsageError(
        _NAME_BEFORE_VALUE.sub(lambda m: f"--{m.group(1)}" if m.group(1) in defined else m.group(1), message)
    )


def checked(required=()):
    """Decorates a binary's ``main(argv)``: no positional arguments, the ``required`` flags set, and library
    errors (ValueError, FileNotFoundError, RuntimeError) whose message starts with a flag's name raised as
    app.UsageError naming ``--flag``."""

    def decorate(main):
        def checked_main(argv):
            if len(argv) > 1:
                raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
            for name in required:
                if not flags.FLAGS[name].value:
                    raise app.UsageError(f"--{name}: required.")
            try:
                return main(argv)
            except (ValueError, FileNotFoundError, RuntimeError) as error:
                raise usage_error(error) from error

        return checked_main

    return decorate


def _one_line_usage_errors(main):
    def wrapped(argv):
        try:
            return main(argv)
        except app.UsageError as error:  # our own checks: the message names the flag and the fix
            sys.stderr.write(f"{os.path.basename(sys.argv[0])}: {error}\n")
            sys.exit(error.exitcode)
        except ImportError as error:
            if "keras-pixelcnn[" not in str(error):  # not a missing extra: keep the traceback
                raise
            sys.stderr.write(f"{os.path.basename(sys.argv[0])}: {error}\n")
            sys.exit(1)

    return wrapped


def run(main):
    """``absl.app.run(main)`` with one-line errors (the quiet start-up is common_flags' import, earlier).

    A UsageError raised by ``main``, or an ImportError naming the extra to
    install, prints one line and exits 1.
    """
    app.run(_one_line_usage_errors(main))
