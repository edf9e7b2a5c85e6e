"""ZeroMQ CURVE for the bus: authenticated, encrypted connections with keys from files.

A publisher with a :class:`CurveServer` makes its XPUB and snapshot sockets CURVE servers
and starts a ZAP handler (``zmq.auth.ThreadAuthenticator``) on its context that accepts a
client only if the client's public key is one of the ``*.key`` files in the authorized
folder. A subscriber with a :class:`CurveClient` knows the server's public key and has its
own key pair. A client with another key is refused by the ZAP handler (counted in
:attr:`KeyAuthorizer.denied` and logged with a fingerprint, never the key); a client with
no CURVE at all fails the handshake before ZAP is asked. Either way it receives nothing.

Key files are the ones ``zmq.auth.create_certificates`` writes (``dope keys generate``):
``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the secret key.
Keys are never logged, and their values are hidden from ``repr``.

>>> is_local_endpoint("tcp://127.0.0.1:5555"), is_local_endpoint("tcp://*:5555")
(True, False)
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from dope.logs import ProblemCounter
from dope.transport.base import BusError
from dope.transport.config import BusConfig

log = logging.getLogger("dope.transport.curve")
_zap_log = logging.getLogger("dope.transport.curve.zap")
_zap_log.setLevel(logging.INFO)  # pyzmq logs client keys at DEBUG: never let them out

PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"
_Z85_KEY_LEN: Final = 40
_LOOPBACK_HOSTS: Final = ("localhost", "[::1]", "::1", "lo")

Socket = zmq.Socket[bytes]
Context = zmq.Context[zmq.Socket[bytes]]


class CurveKeyError(BusError):
    """A key file that is missing or not a ZeroMQ CURVE certificate; the message names the file."""


# ---- key files ------------------------------------------------------------------------------

def _check_key(key: bytes | None, path: Path, what: str) -> bytes:
    if key is None:
        raise CurveKeyError(f"{path}: no {what} in this file (a {SECRET_SUFFIX} file holds both keys)")
    try:
        valid = len(key) == _Z85_KEY_LEN and len(z85.decode(key)) == 32
    except (ValueError, KeyError):
        valid = False
    if not valid:
        raise CurveKeyError(f"{path}: the {what} is not a {_Z85_KEY_LEN}-character Z85 CURVE key")
    return key


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        reason = "no such file" if not path.exists() else "no public-key line" if isinstance(exc, ValueError) \
            else exc.__class__.__name__
        raise CurveKeyError(f"cannot read CURVE key file {path}: {reason}") from None


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key in ``path`` (a ``.key`` or ``.key_secret`` file); :class:`CurveKeyError` names it."""
    path = Path(path)
    public, _ = _read_certificate(path)
    return _check_key(public, path, "public-key")


def load_key_pair(path: str | Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys of a ``.key_secret`` file; warns when others may read it."""
    path = Path(path)
    public, secret = _read_certificate(path)
    pair = _check_key(public, path, "public-key"), _check_key(secret, path, "secret-key")
    warn_if_exposed(path)
    return pair


def warn_if_exposed(path: Path) -> bool:
    """Log a warning (and return True) when group or others have any access to the secret key file."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("secret key file %s is accessible by group/others (mode %04o): run chmod 600 %s",
                    path, mode, path)
        return True
    return False


def fingerprint(public_key: bytes) -> str:
    """A short, non-reversible tag of a public key, for logs (the key itself is never logged)."""
    return hashlib.sha256(public_key).hexdigest()[:12]


def generate_key_pair(directory: str | Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (mode 600) in ``directory``; their paths."""
    folder = Path(directory)
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    if not overwrite and (public.exists() or secret.exists()):
        raise CurveKeyError(f"{secret if secret.exists() else public} already exists (refusing to overwrite keys)")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for an instant
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    secret.chmod(0o600)
    public.chmod(0o644)
    return public, secret


def authorize(public_file: str | Path, authorized_dir: str | Path) -> Path:
    """Copy a client's public key file into the authorized folder (after checking it); the copy's path."""
    load_public_key(public_file)
    target = Path(authorized_dir) / Path(public_file).name
    Path(authorized_dir).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public_file, target)
    return target


# ---- socket roles ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CurveServer:
    """What a publisher needs: its key pair and the folder of authorized client public keys."""

    public_key: bytes = field(repr=False)
    secret_key: bytes = field(repr=False)
    authorized_dir: Path
    secret_file: Path

    @classmethod
    def from_files(cls, secret_file: str | Path, authorized_dir: str | Path) -> CurveServer:
        public, secret = load_key_pair(secret_file)
        folder = Path(authorized_dir)
        if not folder.is_dir():
            raise CurveKeyError(f"authorized keys folder {folder} does not exist")
        return cls(public, secret, folder, Path(secret_file))

    def apply(self, sock: Socket) -> None:
        """Make ``sock`` a CURVE server (before it binds)."""
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True


@dataclass(frozen=True)
class CurveClient:
    """What a subscriber needs: the publishers' public key and its own key pair."""

    server_key: bytes = field(repr=False)
    public_key: bytes = field(repr=False)
    secret_key: bytes = field(repr=False)
    secret_file: Path

    @classmethod
    def from_files(cls, server_public_file: str | Path, secret_file: str | Path) -> CurveClient:
        server = load_public_key(server_public_file)
        public, secret = load_key_pair(secret_file)
        return cls(server, public, secret, Path(secret_file))

    def apply(self, sock: Socket) -> None:
        """Make ``sock`` a CURVE client of the server key (before it connects)."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise BusError("bus.curve_* is configured but this libzmq was built without CURVE support")


def server_curve(bus: BusConfig) -> CurveServer | None:
    """The publisher side of ``bus`` (``curve_server_secret`` + ``curve_authorized_dir``), or None."""
    if not bus.curve_server_secret:
        return None
    _require_curve()
    return CurveServer.from_files(bus.curve_server_secret, bus.curve_authorized_dir)


def client_curve(bus: BusConfig) -> CurveClient | None:
    """The subscriber side of ``bus`` (``curve_server_public`` + ``curve_client_secret``), or None."""
    if not bus.curve_server_public:
        return None
    _require_curve()
    return CurveClient.from_files(bus.curve_server_public, bus.curve_client_secret)


# ---- plaintext beyond loopback ------------------------------------------------------------

def endpoint_host(endpoint: str) -> str | None:
    """The host of a ``tcp://host:port`` endpoint (None for ipc/inproc)."""
    if not endpoint.startswith("tcp://"):
        return None
    return endpoint[len("tcp://"):].rsplit(":", 1)[0]


def is_local_endpoint(endpoint: str) -> bool:
    """True when only this machine can reach ``endpoint``: ipc, inproc, or tcp on a loopback address."""
    host = endpoint_host(endpoint)
    if host is None:
        return True
    host = host.split(";")[-1]  # tcp://source;host:port binds host
    return host.startswith("127.") or host in _LOOPBACK_HOSTS


def check_plaintext_bind(endpoint: str, *, curve: bool, allow: bool) -> None:
    """Refuse to bind beyond loopback without CURVE unless ``allow`` (then warn)."""
    if curve or is_local_endpoint(endpoint):
        return
    if not allow:
        raise BusError(f"refusing to bind {endpoint!r} without CURVE: configure bus.curve_server_secret and "
                       "bus.curve_authorized_dir (see docs/bus.md, Security), bind 127.0.0.1, or set "
                       "bus.allow_plaintext_remote = true")
    log.warning("bus endpoint %s is reachable beyond this machine WITHOUT encryption or authentication "
                "(bus.allow_plaintext_remote = true)", endpoint)


# ---- the ZAP handler ------------------------------------------------------------------------

class KeyAuthorizer:
    """ZAP credentials provider: accepts the public keys of ``*.key`` files in a folder.

    The folder is re-read when its modification time changes (a key file added or removed),
    so a key can be authorized or revoked without a restart (for new connections).
    Refusals are counted in :attr:`denied` and logged with the key's fingerprint.
    """

    def __init__(self, folder: Path, owner: str) -> None:
        self.folder = folder
        self.owner = owner
        self.allowed = 0
        self.denied = 0
        self.problems = ProblemCounter(log)
        self._stamp = -1
        self._keys: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()
        self._reload()

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def _reload(self) -> None:
        stamp = self.folder.stat().st_mtime_ns
        if stamp == self._stamp:
            return
        keys = {load_public_key(path) for path in sorted(self.folder.glob(f"*{PUBLIC_SUFFIX}"))}
        if not keys:
            log.warning("%s: no *%s files in %s: every CURVE client will be refused", self.owner,
                        PUBLIC_SUFFIX, self.folder)
        self._keys, self._stamp = frozenset(keys), stamp

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the ZAP handler with a client's Z85 public key: is it authorized?"""
        with self._lock:
            try:
                self._reload()
            except (OSError, CurveKeyError) as exc:  # keep the last good set of keys
                self.problems.report("curve_keys", f"{self.owner}: cannot re-read {self.folder}: {exc}")
            ok = key in self._keys
            if ok:
                self.allowed += 1
                return True
            self.denied += 1
        self.problems.report("curve_denied", f"{self.owner}: refused a CURVE client with an unauthorized key "
                                             f"(fingerprint {fingerprint(key)}; not in {self.folder})")
        return False


class HandshakeMonitor:
    """Counts (and logs) failed handshakes on a CURVE server socket, e.g. a peer without CURVE at all.

    The ZAP handler never hears of those (the mechanisms differ before it is asked). Poll it
    from the socket's own thread (:meth:`poll`); :meth:`close` before the socket closes.
    """

    EVENTS: Final = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(self, sock: Socket, owner: str) -> None:
        self._sock = sock
        self._monitor: Socket | None = sock.get_monitor_socket(self.EVENTS)
        self._monitor.linger = 0
        self.owner = owner
        self.failed = 0
        self.problems = ProblemCounter(log)

    def poll(self) -> int:
        """Count the failures reported since the last poll; the total."""
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            self.failed += 1
            reason = _failure_reason(event["event"], event["value"])
            self.problems.report("curve_handshake", f"{self.owner}: failed CURVE handshake on "
                                                    f"{event['endpoint'].decode()} ({reason})")
        return self.failed

    def close(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close()
            self._monitor = None


def _failure_reason(event: int, value: int) -> str:
    """The reason of a failed handshake: a ZMTP protocol error's name (``..._MECHANISM_MISMATCH``), or for a
    failure without detail the OS error it carries (``EPIPE``: the peer hung up mid-handshake)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return errno.errorcode.get(value, str(value))
    try:
        return str(zmq.Event(value).name)
    except ValueError:
        return str(value)


@dataclass
class _Zap:
    authenticator: ThreadAuthenticator
    authorizer: KeyAuthorizer
    users: int = 1


_zaps: dict[int, _Zap] = {}
_zaps_lock = threading.Lock()


def start_authenticator(context: Context, server: CurveServer, owner: str) -> KeyAuthorizer:
    """Start (or share) the ZAP handler of ``context`` for ``server``'s authorized folder.

    One handler serves a whole context; publishers sharing a context must share the folder.
    Pair every call with :func:`stop_authenticator`.
    """
    with _zaps_lock:
        zap = _zaps.get(id(context))
        if zap is not None:
            if zap.authorizer.folder != server.authorized_dir:
                raise BusError(f"{owner}: a ZeroMQ context serves one authorized keys folder "
                               f"({zap.authorizer.folder}), not also {server.authorized_dir}")
            zap.users += 1
            return zap.authorizer
        authorizer = KeyAuthorizer(server.authorized_dir, owner)
        authenticator = ThreadAuthenticator(context, log=_zap_log)
        authenticator.start()
        authenticator.configure_curve_callback(domain="*", credentials_provider=authorizer)
        _zaps[id(context)] = _Zap(authenticator, authorizer)
        return authorizer


def stop_authenticator(context: Context) -> None:
    """Release one use of ``context``'s ZAP handler; the last one stops it (before the context ends)."""
    with _zaps_lock:
        zap = _zaps.get(id(context))
        if zap is None:
            return
        zap.users -= 1
        if zap.users > 0:
            return
        del _zaps[id(context)]
    zap.authenticator.stop()
