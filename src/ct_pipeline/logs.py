"""Log records as Rich draws them in a terminal, as plain lines anywhere else.

Kedro reads conf/logging.yml when it is imported, before any project code
runs, and accepts no handler that chooses by itself; the file sends records
out as plain lines (a file, a pipe, nohup, a batch job: no 80-column wrapping),
and settings.py hands them to the file's ``rich`` handler when stdout is a
terminal.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

PLAIN_HANDLER, TERMINAL_HANDLER = "plain", "rich"


def for_a_terminal(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every logger's ``plain`` handler replaced by ``rich``.

    Returned unchanged when it does not define both (another file named by
    KEDRO_LOGGING_CONFIG, or Kedro's default when conf/logging.yml is absent).
    """
    handlers = config.get("handlers", {})
    if PLAIN_HANDLER not in handlers or TERMINAL_HANDLER not in handlers:
        return config
    changed = copy.deepcopy(config)
    for logger in [changed.get("root", {}), *changed.get("loggers", {}).values()]:
        if "handlers" in logger:
            logger["handlers"] = [
                TERMINAL_HANDLER if name == PLAIN_HANDLER else name
                for name in logger["handlers"]
            ]
    return changed


def rich_in_a_terminal() -> None:
    """Reconfigure Kedro's logging for a terminal; nothing elsewhere."""
    if not sys.stdout.isatty():
        return
    from kedro.framework.project import LOGGING, configure_logging

    changed = for_a_terminal(LOGGING.data)
    if changed is not LOGGING.data:
        configure_logging(changed)
