"""API keys and roles: who may read, trade, administer or feed market data.

Keys are configured by the operator, never by a caller, in one of two places:
- `EDGERAY_API_KEYS_FILE`: a YAML file `keys: [{name, role, sha256 | key}, ...]` (prefer `sha256`: the file
  then holds no usable key; `edgeray keys add` writes such entries);
- `EDGERAY_API_KEYS`: `name:role:key,name:role:key` in the server's environment.

Only SHA-256 digests are kept in memory. A presented key is hashed and compared with every configured
digest in constant time (`hmac.compare_digest`, no early exit), so neither the comparison nor the lookup
leaks how much of a key matched. A caller's identity is the configured `name`; no key characters are
ever shown.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLES = ("viewer", "trader", "admin", "feed")
MIN_KEY_LENGTH = 24
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")

# What each role may do. `feed` pushes market data and nothing else, so a feed process holding its key
# can neither read positions nor trade; traders and admins may push too (manual corrections).
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "trader": frozenset({"read", "trade", "feed"}),
    "admin": frozenset({"read", "trade", "admin", "feed"}),
    "feed": frozenset({"feed"}),
}
ENV_KEYS, ENV_KEYS_FILE = "EDGERAY_API_KEYS", "EDGERAY_API_KEYS_FILE"


class KeyConfigError(ValueError):
    """The operator's key configuration is unusable; the message names the entry and what is wrong."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def __str__(self) -> str:  # what the audit log and job lists show
        return self.name


@dataclass(frozen=True)
class KeyEntry:
    name: str
    role: str
    sha256: str  # hex digest of the key

    def as_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "sha256": self.sha256}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entry(raw: dict, where: str) -> KeyEntry:
    if not isinstance(raw, dict):
        raise KeyConfigError(f"{where}: expected a mapping with name, role and sha256 or key, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"name", "role", "sha256", "key"})
    if unknown:
        raise KeyConfigError(f"{where}.{unknown[0]}: unknown field; known: name, role, sha256, key")
    name, role = raw.get("name"), raw.get("role")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise KeyConfigError(f"{where}.name: {name!r} must be 1-64 letters, digits or _.@-")
    if role not in ROLES:
        raise KeyConfigError(f"{where}.role: {role!r} is not a role; roles: {list(ROLES)}")
    if ("key" in raw) == ("sha256" in raw):
        raise KeyConfigError(f"{where}: give exactly one of key or sha256 for {name!r}")
    if "key" in raw:
        key = raw["key"]
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{where}.key: the key of {name!r} is shorter than {MIN_KEY_LENGTH} characters")
        return KeyEntry(name, role, digest(key))
    sha = raw["sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise KeyConfigError(f"{where}.sha256: the digest of {name!r} must be 64 lower-case hex characters")
    return KeyEntry(name, role, sha)


def parse_env_keys(spec: str) -> list[KeyEntry]:
    """`name:role:key,...` (EDGERAY_API_KEYS)."""
    entries = []
    for i, item in enumerate(filter(None, (s.strip() for s in spec.split(",")))):
        parts = item.split(":", 2)
        if len(parts) != 3:
            raise KeyConfigError(f"{ENV_KEYS}[{i}]: entry must be name:role:key (the entry is not shown: it holds a key)")
        entries.append(_entry({"name": parts[0], "role": parts[1], "key": parts[2]}, f"{ENV_KEYS}[{i}]"))
    return entries


def load_key_file(path: str | os.PathLike) -> list[KeyEntry]:
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise KeyConfigError(f"{ENV_KEYS_FILE}: {str(path)!r} does not exist or is not a file")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
        raise KeyConfigError(f"{ENV_KEYS_FILE}: {str(path)!r} must hold `keys: [{{name, role, sha256}}, ...]`")
    return [_entry(raw, f"{path.name}: keys[{i}]") for i, raw in enumerate(doc.get("keys") or [])]


class KeyRing:
    def __init__(self, entries: list[KeyEntry]):
        names = [e.name for e in entries]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise KeyConfigError(f"keys: name {duplicated[0]!r} is configured twice")
        self.entries = tuple(entries)

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> KeyRing:
        environ = os.environ if environ is None else environ
        entries = []
        if environ.get(ENV_KEYS_FILE):
            entries += load_key_file(environ[ENV_KEYS_FILE])
        if environ.get(ENV_KEYS):
            entries += parse_env_keys(environ[ENV_KEYS])
        return cls(entries)

    @classmethod
    def from_dicts(cls, raw: list[dict]) -> KeyRing:
        return cls([_entry(r, f"api_keys[{i}]") for i, r in enumerate(raw)])

    def require_configured(self) -> KeyRing:
        """Refuse to serve with no keys: every protected route would answer 401 to everyone."""
        if not self.entries:
            raise KeyConfigError(
                f"no API keys are configured: set {ENV_KEYS_FILE} (a YAML key file, see `edgeray keys add`) or "
                f"{ENV_KEYS}='name:role:key,...' in the Serve replicas' environment (runtime_env.env_vars in "
                f"configs/serve.yaml); refusing to start an API that would answer 401 to everyone")
        return self

    def identify(self, presented: str | None) -> Identity | None:
        if not presented:
            return None
        candidate = digest(presented)
        found = None
        for entry in self.entries:  # every entry is compared: the time does not depend on which one matches
            if hmac.compare_digest(candidate, entry.sha256):
                found = entry
        return Identity(found.name, found.role) if found else None

    def __len__(self) -> int:
        return len(self.entries)


DEFAULT_KEY_FILE = "~/.config/edgeray/api_keys.yaml"


def add_key(path: str | os.PathLike, name: str, role: str) -> str:
    """Create a random key for `name` with `role` in the key file (created 0600 if absent) and return it. The file
    keeps only the key's SHA-256; the key itself is shown once, to whoever runs this."""
    import secrets

    path = Path(os.path.expanduser(str(path)))
    entries = load_key_file(path) if path.exists() else []
    key = secrets.token_urlsafe(32)
    new = _entry({"name": name, "role": role, "sha256": digest(key)}, "new key")
    KeyRing([*entries, new])  # refuses a duplicated name before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"keys": [e.as_dict() for e in [*entries, new]]}, sort_keys=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return key
