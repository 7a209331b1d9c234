"""Monitor transcripts: real QEMU answers recorded once, replayed to test decoding offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host.monitor import Monitor, MonitorError, check_command

DATA = Path(__file__).resolve().parent.parent / "data" / "host"


def _key(command: str, arguments: dict[str, Any] | None) -> str:
    return json.dumps([command, arguments or {}], sort_keys=True)


class RecordingMonitor:
    """Wraps a live monitor and keeps every (command, answer) pair it saw."""

    def __init__(self, inner: Monitor) -> None:
        self.inner = inner
        self.answers: dict[str, Any] = {}

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            result = await self.inner.execute(command, arguments)
        except MonitorError as e:
            self.answers[_key(command, arguments)] = {"error": str(e)}
            raise
        self.answers[_key(command, arguments)] = {"return": result}
        return result

    async def close(self) -> None:
        await self.inner.close()

    def save(self, path: Path, note: str) -> None:
        """Write the transcript with a note of how it was made."""
        path.write_text(json.dumps({"note": note, "answers": self.answers}, indent=1) + "\n")


class ReplayMonitor:
    """Answers from a recorded transcript; a command it never recorded is an error."""

    def __init__(self, path: Path) -> None:
        self.answers: dict[str, Any] = json.loads(path.read_text())["answers"]
        self.sent: list[tuple[str, dict[str, Any] | None]] = []

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        check_command(command, arguments)
        self.sent.append((command, arguments))
        answer = self.answers.get(_key(command, arguments))
        if answer is None:
            raise MonitorError(f"not in transcript: {command} {arguments}")
        if "error" in answer:
            raise MonitorError(answer["error"])
        return answer["return"]

    async def close(self) -> None:
        """Nothing to close."""
