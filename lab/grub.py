"""The default boot entry of a GRUB 2 configuration: kernel, initrds and command line.

Pure parsing (no I/O beyond the `read` callback the caller gives): grub.cfg is read as GRUB's
shell reads it, far enough to find what it boots by default: `set`/plain assignments and `$var`
expansion, `load_env` (grubenv), `if`/`elif`/`else` on the tests GRUB's generators write,
`menuentry`/`submenu` nesting with titles and `--id`/`$menuentry_id_option` ids, `set root=` and
`search --set=root`, `linux`/`linux16`/`linuxefi` with `initrd`/`initrd16`/`initrdefi`, and
`blscfg` (BootLoaderSpec entries under /loader/entries, as Fedora and RHEL 8+ write them).
`set default=` may be an index, a title, an id, or a `>` path into submenus; a default that
names nothing (as an absent saved_entry does) means entry 0, as in GRUB.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

LINUX = ("linux", "linux16", "linuxefi")
INITRD = ("initrd", "initrd16", "initrdefi")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}|\$([A-Za-z_][A-Za-z0-9_]*|[0-9]+)")
_ID_OPTIONS = ("--id", "$menuentry_id_option", "${menuentry_id_option}")
_DEVICE = re.compile(r"^\(([^)]*)\)")

# read(path): a file's text, None when absent; "grubenv" is the one beside grub.cfg, and a path
# ending in "/" lists that directory (names separated by whitespace)
Reader = Callable[[str], str | None]


class GrubError(ValueError):
    """The configuration names no bootable Linux entry."""


@dataclass(frozen=True)
class Root:
    """Where an entry's paths live: a partition number, a filesystem UUID or label, or unset."""

    partition: int | None = None
    uuid: str = ""
    label: str = ""


@dataclass(frozen=True)
class BootEntry:
    """One Linux boot entry: its title path, kernel and initrd paths, command line and root."""

    title: str
    kernel: str
    initrds: tuple[str, ...]
    cmdline: str
    root: Root = Root()


@dataclass
class _Menu:
    title: str
    id: str = ""
    entry: BootEntry | None = None
    children: list[_Menu] = field(default_factory=list)


def parse_env_block(text: str) -> dict[str, str]:
    """grubenv (`# GRUB Environment Block`, then name=value lines padded with #)."""
    env = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        env[name.strip()] = value
    return env


def device_root(device: str) -> Root:
    """A GRUB device name (`hd0,msdos1`, `hd0,gpt2`, `hd0,1`) as a partition number."""
    m = re.fullmatch(r"\s*\(?\s*[hc]d\d+\s*,\s*(?:msdos|gpt|bsd)?(\d+)[^)]*\)?\s*", device)
    return Root(partition=int(m.group(1))) if m else Root()


def split_path(path: str, root: Root) -> tuple[str, Root]:
    """`(hd0,gpt2)/vmlinuz` -> ("/vmlinuz", partition 2); a path without a device keeps `root`."""
    m = _DEVICE.match(path)
    if not m:
        return path, root
    dev = m.group(1)
    rest = path[m.end() :] or "/"
    return rest, root if dev in ("", "$root", "${root}") else device_root(dev)


def _words(line: str) -> list[list[str]]:
    """One line as commands of words: quotes removed, `;` separating, `#` comments dropped."""
    cmds: list[list[str]] = [[]]
    word: str | None = None
    i = 0
    while i < len(line):
        c = line[i]
        if c in " \t":
            if word is not None:
                cmds[-1].append(word)
            word = None
        elif c == "#" and word is None:
            break
        elif c == ";":
            if word is not None:
                cmds[-1].append(word)
            word = None
            cmds.append([])
        elif c == "'":
            end = line.find("'", i + 1)
            end = len(line) if end < 0 else end
            word = (word or "") + line[i + 1 : end]
            i = end
        elif c == '"':
            word = word or ""
            i += 1
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$':
                    i += 1
                word += line[i]
                i += 1
        elif c == "\\" and i + 1 < len(line):
            i += 1
            word = (word or "") + line[i]
        else:
            word = (word or "") + c
        i += 1
    if word is not None:
        cmds[-1].append(word)
    return [c for c in cmds if c]


def _statements(text: str) -> list[list[str]]:
    """grub.cfg as a list of commands (lists of words); a lone `{` or `}` is its own command."""
    out: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        for words in _words(line):
            cur: list[str] = []
            for w in words:
                if w in ("{", "}"):
                    if cur:
                        out.append(cur)
                    out.append([w])
                    cur = []
                else:
                    cur.append(w)
            if cur:
                out.append(cur)
    split: list[list[str]] = []
    for words in out:  # `then insmod xzio` (one-line if) is `then` and a command
        if words[0] in ("then", "else", "do") and len(words) > 1:
            split += [[words[0]], words[1:]]
        else:
            split.append(words)
    return split


class _Interp:
    """A small GRUB script walker: enough state to find the menu and the default."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.env: dict[str, str] = {}
        self.root = Root()
        self.top = _Menu("")
        self.kernel: tuple[str, str, Root] | None = None
        self.initrds: list[str] = []

    def expand(self, word: str) -> str:
        return _VAR.sub(lambda m: self.env.get(m.group(1) or m.group(2), ""), word)

    def test(self, words: list[str]) -> bool | None:
        """`[ ... ]` as GRUB's generators write it; None when the test is not understood."""
        if words and words[0] == "!":
            inner = self.test(words[1:])
            return None if inner is None else not inner
        if len(words) < 2 or words[0] not in ("[", "test"):
            return None
        args = [self.expand(w) for w in (words[1:-1] if words[-1] == "]" else words[1:])]
        if len(args) == 1:
            return args[0] != ""
        if len(args) == 2 and args[0] in ("-n", "-z"):
            return (args[1] != "") == (args[0] == "-n")
        if len(args) == 3 and args[1] in ("=", "==", "!="):
            return (args[0] == args[2]) == (args[1] != "!=")
        return None

    def run(self, cmds: list[list[str]], menu: _Menu, start: int = 0, stop: str = "") -> int:
        """Walk commands from `start` until `}` or `stop` word; the index after the block."""
        i = start
        while i < len(cmds):
            words = cmds[i]
            head = words[0]
            if head == "}" or head in stop.split():
                return i
            if head == "if":
                i = self._if(cmds, i, menu)
                continue
            if head in ("menuentry", "submenu"):
                i = self._menu(cmds, i, menu)
                continue
            if head == "function":  # a definition runs only when called: skip its body
                i = self._skip(cmds, i + 1, stop=False) + 1
                continue
            self.command([self.expand(w) for w in words], words)
            i += 1
        return i

    def _if(self, cmds: list[list[str]], i: int, menu: _Menu) -> int:
        taken = False
        cond = cmds[i][1:]
        while True:
            i += 1  # past `if ...`/`elif ...`/`else`, and the `then` when on its own
            if i < len(cmds) and cmds[i] == ["then"]:
                i += 1
            verdict = True if cond is None else self.test([w for w in cond if w != "then"])
            take = not taken and verdict is not False
            if take:
                taken = True
                i = self.run(cmds, menu, i, stop="elif else fi")
            else:
                i = self._skip(cmds, i)
            if i >= len(cmds):
                return i
            head = cmds[i][0]
            if head == "fi":
                return i + 1
            cond = cmds[i][1:] if head == "elif" else None

    def _skip(self, cmds: list[list[str]], i: int, stop: bool = True) -> int:
        """The index of the branch end (`elif`/`else`/`fi`), or with stop=False of the `}`
        closing the block opened at `i`."""
        depth = 0
        while i < len(cmds):
            head = cmds[i][0]
            if stop and depth == 0 and head in ("elif", "else", "fi"):
                return i
            if head in ("if", "{"):
                depth += 1
            elif head in ("fi", "}"):
                depth -= 1
                if not stop and depth == 0:
                    return i
            i += 1
        return i

    def _menu(self, cmds: list[list[str]], i: int, parent: _Menu) -> int:
        raw = cmds[i]
        title = self.expand(raw[1]) if len(raw) > 1 else ""
        mid = ""
        for j, w in enumerate(raw):
            if w.startswith("--id="):
                mid = self.expand(w[5:])
            elif w in _ID_OPTIONS and j + 1 < len(raw):
                mid = self.expand(raw[j + 1])
        i += 1
        if i < len(cmds) and cmds[i] == ["{"]:
            i += 1
        item = _Menu(title, mid)
        saved_root, saved_env = self.root, dict(self.env)
        self.kernel, self.initrds = None, []
        end = self.run(cmds, item, i)
        if self.kernel is not None and not item.children:
            path, args, root = self.kernel
            item.entry = BootEntry(title, path, tuple(self.initrds), args, root)
        self.root, self.env = saved_root, saved_env
        self.kernel = None
        if item.entry is not None or item.children:
            parent.children.append(item)
        return end + 1

    def command(self, words: list[str], raw: list[str]) -> None:
        head = words[0]
        if head == "set" and len(words) > 1 and "=" in words[1]:
            self.assign(*words[1].split("=", 1))
        elif len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", head):
            self.assign(*head.split("=", 1))
        elif head == "load_env":
            named = words[2] if len(words) > 2 and words[1] == "-f" else ""
            text = (self.read(named) if named else None) or self.read("grubenv") or ""
            self.env.update(parse_env_block(text))
        elif head == "search":
            self.search(words[1:])
        elif head in LINUX and len(words) > 1:
            path, root = split_path(words[1], self.root)
            args = " ".join(self.expand(w) for w in raw[2:] if self.expand(w))
            self.kernel = (path, " ".join(args.split()), root)
        elif head in INITRD:
            self.initrds = [split_path(w, self.root)[0] for w in words[1:]]
        elif head == "blscfg":
            self.bls()

    def assign(self, name: str, value: str) -> None:
        self.env[name] = value
        if name == "root":
            self.root = device_root(value) if value else Root()

    def search(self, args: list[str]) -> None:
        kind, target, var = "file", "", "root"
        for a in args:
            if a in ("--fs-uuid", "-u"):
                kind = "uuid"
            elif a in ("--label", "-l"):
                kind = "label"
            elif a.startswith("--set="):
                var = a[6:]
            elif not a.startswith("-"):
                target = a
        if var == "root" and target:
            self.root = Root(uuid=target) if kind == "uuid" else Root(label=target)

    def bls(self) -> None:
        """BootLoaderSpec entries (`blscfg`): newest version first, as GRUB's blscfg sorts them."""
        listing = self.read("/loader/entries/") or self.read("/boot/loader/entries/") or ""
        prefix = "/loader/entries/" if self.read("/loader/entries/") else "/boot/loader/entries/"
        entries = []
        for name in listing.split():
            if not name.endswith(".conf"):
                continue
            fields: dict[str, list[str]] = {}
            for line in (self.read(prefix + name) or "").splitlines():
                parts = line.strip().split(None, 1)
                if len(parts) == 2 and not parts[0].startswith("#"):
                    fields.setdefault(parts[0], []).append(parts[1])
            if "linux" not in fields:
                continue
            version = fields.get("version", [name])[0]
            entries.append((version, name[: -len(".conf")], fields))
        entries.sort(key=lambda e: _version_key(e[0]), reverse=True)
        for _, bls_id, fields in entries:
            opts = " ".join(self.expand(o) for o in fields.get("options", []))
            initrds = tuple(
                w for line in fields.get("initrd", []) for w in self.expand(line).split()
            )
            title = fields.get("title", [bls_id])[0]
            entry = BootEntry(title, fields["linux"][0], initrds, " ".join(opts.split()), self.root)
            self.top.children.append(_Menu(title, bls_id, entry))


def _version_key(version: str) -> list[tuple[int, object]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_+~]", version)]


def _first_entry(item: _Menu) -> BootEntry | None:
    if item.entry is not None:
        return item.entry
    for child in item.children:
        found = _first_entry(child)
        if found is not None:
            return found
    return None


def _pick(menu: _Menu, selector: str) -> _Menu | None:
    selector = selector.strip()
    if selector.isdigit():
        n = int(selector)
        return menu.children[n] if n < len(menu.children) else None
    return next((c for c in menu.children if selector in (c.title, c.id)), None)


def default_entry(text: str, read: Reader | None = None) -> BootEntry:
    """The entry GRUB boots by default from grub.cfg `text`; `read(path)` gives other files."""
    interp = _Interp(read or (lambda _path: None))
    interp.run(_statements(text), interp.top)
    menu = interp.top
    default = interp.env.get("default", "0") or "0"
    item: _Menu | None = menu
    for part in default.split(">"):
        item = _pick(item, part) if item is not None else None
    chosen = _first_entry(item) if item is not None else None
    if chosen is None:
        chosen = _first_entry(menu)
    if chosen is None:
        raise GrubError("grub.cfg has no menu entry with a linux/linux16/linuxefi command")
    return chosen
