"""Read-only QEMU monitor transports: a QMP socket, or libvirt's qemu-monitor-command.

Every command goes through `check_command`, an allowlist of commands that change nothing in the
VM. `info mtree` in particular is refused: after it QEMU 7.2 stopped emitting DEVICE_DELETED, so
the probe would cause the very hang it diagnoses (kernel-facts.md section 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any, Protocol

# Commands that only read. query-* and qom-get have no side effect; qmp_capabilities only leaves
# the QMP negotiation mode of this connection.
READ_ONLY_COMMANDS = frozenset(
    {"qmp_capabilities", "query-pci", "qom-get", "query-status", "query-name", "query-uuid"}
)
# The one HMP command allowed: 64 words of guest-physical memory (256 config bytes via ECAM).
XP_COMMAND = re.compile(r"xp /64wx 0x[0-9a-f]{1,16}")
# A QMP reply or event line is a few KiB; query-pci with many ports is the largest (~1 KiB/port).
_LINE_LIMIT = 4 * 1024 * 1024


class MonitorError(Exception):
    """The monitor could not be reached, answered with an error, or broke the protocol."""


class ForbiddenCommand(MonitorError):
    """A command outside the read-only allowlist was about to be sent."""


def check_command(command: str, arguments: dict[str, Any] | None) -> None:
    """Refuse anything but the read-only allowlist (raises ForbiddenCommand)."""
    if command == "human-monitor-command":
        line = (arguments or {}).get("command-line", "")
        if not isinstance(line, str) or not XP_COMMAND.fullmatch(line):
            raise ForbiddenCommand(f"HMP command not allowed: {line!r}")
        return
    if command not in READ_ONLY_COMMANDS:
        raise ForbiddenCommand(f"QMP command not allowed: {command!r}")


def xp_arguments(address: int) -> dict[str, str]:
    """human-monitor-command arguments that read 256 bytes of guest-physical memory."""
    return {"command-line": f"xp /64wx 0x{address:x}"}


class Monitor(Protocol):
    """What the probe needs from a monitor: run one allowed command, return its `return`."""

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...

    async def close(self) -> None: ...


class QMPMonitor:
    """One QMP connection on a unix socket (a second monitor beside libvirt's or the lab's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0

    @classmethod
    async def connect(cls, path: str | Path) -> QMPMonitor:
        """Connect, read the greeting and leave capabilities negotiation."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
        except OSError as e:
            raise MonitorError(f"cannot connect to {path}: {e}") from e
        mon = cls(reader, writer)
        try:
            greeting = await mon._read()
            if "QMP" not in greeting:
                raise MonitorError(f"{path}: not a QMP greeting")
            await mon.execute("qmp_capabilities")
        except BaseException:
            await mon.close()
            raise
        return mon

    async def _read(self) -> dict[str, Any]:
        """Next message that is not an asynchronous event."""
        while True:
            try:
                line = await self._reader.readline()
            except (OSError, ValueError) as e:  # ValueError: a line over the limit
                raise MonitorError(f"QMP read failed: {e}") from e
            if not line:
                raise MonitorError("QMP connection closed")
            try:
                msg = json.loads(line)
            except ValueError as e:
                raise MonitorError(f"QMP sent malformed JSON: {line[:80]!r}") from e
            if not isinstance(msg, dict):
                raise MonitorError("QMP sent a non-object message")
            if "event" not in msg:
                return msg

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one allowed command and return its result (raises MonitorError on error)."""
        check_command(command, arguments)
        self._next_id += 1
        req: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            req["arguments"] = arguments
        try:
            self._writer.write(json.dumps(req).encode() + b"\n")
            await self._writer.drain()
        except OSError as e:
            raise MonitorError(f"QMP write failed: {e}") from e
        while True:
            msg = await self._read()
            if msg.get("id") not in (None, self._next_id):
                continue  # an answer to an earlier command abandoned by a timeout
            if "error" in msg:
                err = msg["error"]
                desc = err.get("desc", err) if isinstance(err, dict) else err
                raise MonitorError(f"{command}: {desc}")
            if "return" not in msg:
                raise MonitorError(f"{command}: reply without return")
            return msg["return"]

    async def close(self) -> None:
        """Close the connection (QEMU keeps running; its other monitors are unaffected)."""
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class VirshMonitor:
    """The same commands through libvirt (`virsh qemu-monitor-command`).

    libvirt marks a domain tainted `custom-monitor` after its first such command; the domain's
    behaviour does not change, but the taint shows in its log and `virsh dominfo`.
    """

    def __init__(self, uri: str, domain: str, virsh: str = "virsh") -> None:
        self.uri = uri
        self.domain = domain
        self.virsh = virsh

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one allowed command through libvirt's monitor connection."""
        check_command(command, arguments)
        if command == "qmp_capabilities":
            return {}  # libvirt owns the monitor and has negotiated already
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        out = await run_virsh(
            self.virsh, self.uri, "qemu-monitor-command", self.domain, json.dumps(req)
        )
        try:
            msg = json.loads(out)
        except ValueError as e:
            raise MonitorError(f"virsh: malformed reply {out[:80]!r}") from e
        if not isinstance(msg, dict) or "return" not in msg:
            raise MonitorError(f"{command}: {msg.get('error') if isinstance(msg, dict) else msg}")
        return msg["return"]

    async def close(self) -> None:
        """Nothing held open: each command is one virsh call."""


async def run_virsh(virsh: str, uri: str, *args: str) -> str:
    """Run `virsh -c URI ARGS`, return stdout (raises MonitorError on failure)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            virsh,
            "-q",
            "-c",
            uri,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise MonitorError(f"cannot run {virsh}: {e}") from e
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise MonitorError(f"virsh {args[0]}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")
