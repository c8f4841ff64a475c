"""The state file of the detached broker of ``anonstream kafka up|down|status``: where it is
and how it is read and written (atomically)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anonstream.broker import BrokerError

STATE_FILE_NAME = "kafka-up.json"


def state_dir() -> Path:
    """Where ``kafka_up`` records its broker: ``$ANONSTREAM_STATE_DIR`` or ~/.cache/anonstream."""
    env = os.environ.get("ANONSTREAM_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anonstream"


def default_state_file() -> Path:
    return state_dir() / STATE_FILE_NAME


def read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot read the broker state file {state_file}: {exc}") from exc
    if not isinstance(data, dict) or not {"pid", "bootstrap", "data_dir"} <= data.keys():
        raise BrokerError(f"{state_file} is not a broker state file (delete it by hand)")
    return data


def write_state(state_file: Path, record: Mapping[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(state_file.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(state_file)
