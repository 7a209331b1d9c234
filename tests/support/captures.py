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


def truncate_configs(tree: Path, size: int = 64) -> int:
    """Cut every device's config space to `size` bytes, as sysfs serves it without CAP_SYS_ADMIN."""
    n = 0
    for p in (tree / "sys").rglob("config"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size > size:
            p.write_bytes(p.read_bytes()[:size])
            n += 1
    return n


def cut_log(tree: Path, lines: int = 25) -> Path:
    """kmsg-cut.txt beside the tree's kmsg.txt: its last `lines` records, as a wrapped ring buffer
    leaves them (the boot's `_OSC` lines gone)."""
    records = (tree / "kmsg.txt").read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(records) if line[:1].isdigit()]
    out = tree / "kmsg-cut.txt"
    out.write_text("".join(records[starts[-lines] :]))
    return out


def with_boot_id(tree: Path, boot_id: str) -> Path:
    """The tree with /proc/sys/kernel/random/boot_id set to `boot_id` (the captures have none)."""
    path = tree / "proc/sys/kernel/random/boot_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(boot_id + "\n")
    return tree
