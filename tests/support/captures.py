"""The real guest captures for the tests: paths and helpers ship with the demo (demo.captures);
DATA is the test data directory the captures were copied into."""

from collections.abc import Iterable
from pathlib import Path

from demo.captures import ALL as ALL
from demo.captures import GUESTS as GUESTS
from demo.captures import PHASES as PHASES
from demo.captures import SCENARIOS as SCENARIOS
from demo.captures import Capture as Capture
from demo.captures import materialize_links as materialize_links
from demo.captures import tree_args as tree_args

DATA = Path(__file__).resolve().parent.parent / "data"


def kmsg_with(src: Path, dest: Path, messages: Iterable[str]) -> Path:
    """Copy the /dev/kmsg records of `src` to `dest` with `messages` appended as later records."""
    text = src.read_text()
    seq = max(int(line.split(",")[1]) for line in text.splitlines() if line[:1].isdigit())
    lines = [f"6,{seq + i},{90_000_000 + i},-;{m}\n" for i, m in enumerate(messages, 1)]
    dest.write_text(text + "".join(lines))
    return dest
