"""Shared by the workflow scripts: send stderr (progress bars, warnings) and logging to the rule's log file."""

import logging
import sys


def log_to(path):
    handle = open(path, "w", buffering=1)
    sys.stderr = handle
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)
    return logging.getLogger("sdm")
