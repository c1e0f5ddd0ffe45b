"""No model hub, ever: the audio stages load models from paths that registry packages installed.

faster-whisper and huggingface_hub fall back to downloading when a model is named instead of
given as a path, or when a model directory lacks a file; offline, that fails at once with a
clear error instead of hanging or fetching. Called before any model library is imported.
"""

from __future__ import annotations

import os

__all__ = ["OFFLINE_VARIABLES", "ensure_offline"]

OFFLINE_VARIABLES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}


def ensure_offline() -> None:
    """Set the hub libraries' offline variables (a value the user set is kept)."""
    for key, value in OFFLINE_VARIABLES.items():
        os.environ.setdefault(key, value)
