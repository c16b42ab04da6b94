"""Silence the libraries' own progress bars and deprecation chatter (our progress display replaces them)."""

from __future__ import annotations

import os
import sys


def quiet_libraries() -> None:
    """Our progress display replaces the libraries' bars and deprecation chatter."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():  # bars we keep (TRL's reference scoring) update every 15 s in a log, not 10 times a second
        os.environ.setdefault("TQDM_MININTERVAL", "15")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
