"""CURVE on the bus: only authorized keys receive (live and snapshot), refusals are counted, key files are checked."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dope.cli import main as dope_main
from dope.config import BusConfig, ConfigError, config_from_dict
from dope.messages import Bar, Heartbeat
from dope.transport import (
    BusError,
    CurveClient,
    CurveKeyError,
    CurveServer,
    ZmqPublisher,
    ZmqSubscriber,
    client_curve,
    open_publisher,
    open_subscriber,
    server_curve,
)
from dope.transport.curve import (
    KeyAuthorizer,
    check_plaintext_bind,
    fingerprint,
    generate_key_pair,
    is_local_endpoint,
    load_key_pair,
    load_public_key,
)
from tests.integration.test_bus_behaviour import make_bar

ANY_PORT = "tcp://127.0.0.1:0"


@dataclass
class Keys:
    """Key files made with ``dope keys generate``: the server, an authorized client and an intruder."""

    root: Path
    authorized: Path

    def secret(self, name: str) -> Path:
        return self.root / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def client(self, name: str) -> CurveClient:
        return CurveClient.from_files(self.public("server"), self.secret(name))

    def server(self) -> CurveServer:
        return CurveServer.from_files(self.secret("server"), self.authorized)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    root, authorized = tmp_path / "keys", tmp_path / "keys" / "authorized"
    assert dope_main(["keys", "generate", str(root), "--name", "server"]) == 0
    assert dope_main(["keys", "generate", str(root), "--name", "client", "--authorize", str(authorized)]) == 0
    assert dope_main(["keys", "generate", str(root), "--name", "intruder"]) == 0
    return Keys(root, authorized)


@pytest.fixture
def publisher(keys: Keys) -> Iterator[ZmqPublisher]:
    with ZmqPublisher(ANY_PORT, "secure", snapshot_endpoint=ANY_PORT, curve=keys.server(), linger_ms=0,
                      heartbeat_ms=50) as pub:
        yield pub


def bars_received(sub: ZmqSubscriber, within_ms: int) -> list[Bar]:
    """Every bar ``sub`` receives before ``within_ms`` passes."""
    got: list[Bar] = []
    deadline = time.monotonic() + within_ms / 1000
    while (left := int((deadline - time.monotonic()) * 1000)) > 0:
        msg = sub.receive(timeout_ms=min(left, 50))
        if isinstance(msg, Bar):
            got.append(msg)
    return got


def test_only_the_authorized_key_receives_and_refusals_are_counted(
        keys: Keys, publisher: ZmqPublisher, caplog: pytest.LogCaptureFixture) -> None:
    ep = [publisher.endpoint]
    with ZmqSubscriber(ep, ["bar.", "heartbeat."], curve=keys.client("client")) as good, \
            ZmqSubscriber(ep, ["bar."], curve=keys.client("intruder")) as intruder, \
            ZmqSubscriber(ep, ["bar."]) as plaintext:
        assert publisher.wait_for_subscriptions(1, timeout_ms=5_000)
        for i in range(5):
            publisher.publish(make_bar("BTCUSDT", i))
        assert [b.open_time for b in bars_received(good, 1_000)] == [make_bar("BTCUSDT", i).open_time
                                                                     for i in range(5)]
        assert bars_received(intruder, 300) == [] and bars_received(plaintext, 1) == []
        publisher.heartbeat({})
        beat = good.receive(timeout_ms=1_000)
    assert publisher.stats.subscriptions == 2  # bar. and heartbeat. of the good one: the refused never subscribed
    assert publisher.curve_denied >= 1 and publisher.curve_failed >= 1  # wrong key (ZAP), no CURVE (handshake)
    assert isinstance(beat, Heartbeat) and beat.counters["bus.curve_denied"] == publisher.curve_denied
    assert beat.counters["bus.curve_failed"] == publisher.curve_failed
    assert "failed CURVE handshake" in caplog.text  # with its reason: the mechanism, or the hang-up under load
    assert any(reason in caplog.text for reason in ("MECHANISM_MISMATCH", "(EPIPE)", "(ECONNRESET)"))
    assert f"fingerprint {fingerprint(load_public_key(keys.public('intruder')))}" in caplog.text
    for name in ("server", "client", "intruder"):  # keys are never logged
        public, secret = load_key_pair(keys.secret(name))
        assert public.decode() not in caplog.text and secret.decode() not in caplog.text


def test_the_snapshot_socket_is_protected_too(keys: Keys, publisher: ZmqPublisher) -> None:
    snap = publisher.snapshot_endpoint
    assert snap is not None
    for i in range(3):
        publisher.publish(make_bar("ETHUSDT", i))
    with ZmqSubscriber([publisher.endpoint], ["bar."], snapshot_endpoint=snap, curve=keys.client("client")) as good:
        assert [b.open_time for b in good.catch_up(timeout_ms=2_000)] == [make_bar("ETHUSDT", i).open_time
                                                                          for i in range(3)]
    with ZmqSubscriber([publisher.endpoint], ["bar."], snapshot_endpoint=snap,
                       curve=keys.client("intruder")) as intruder:
        assert intruder.catch_up(timeout_ms=300) == []


def test_config_wires_curve_through_open_publisher_and_open_subscriber(keys: Keys) -> None:
    bus = BusConfig(publish=ANY_PORT, snapshot="", curve_server_secret=str(keys.secret("server")),
                    curve_authorized_dir=str(keys.authorized), curve_server_public=str(keys.public("server")),
                    curve_client_secret=str(keys.secret("client")), linger_ms=0)
    with open_publisher(bus, "cfg") as pub, open_subscriber(bus, ["bar."], endpoints=[pub.endpoint]) as sub:
        assert pub.wait_for_subscriptions(1, timeout_ms=5_000)
        pub.publish(make_bar("BTCUSDT", 0))
        assert len(bars_received(sub, 300)) == 1
    assert server_curve(BusConfig()) is None and client_curve(BusConfig()) is None


def test_curve_settings_go_in_pairs() -> None:
    with pytest.raises(ConfigError, match="curve_server_secret and bus.curve_authorized_dir"):
        config_from_dict({"bus": {"curve_server_secret": "server.key_secret"}})
    with pytest.raises(ConfigError, match="curve_server_public and bus.curve_client_secret"):
        config_from_dict({"bus": {"curve_client_secret": "client.key_secret"}})


def test_bad_key_files_are_errors_naming_the_file(keys: Keys, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text('curve\n    public-key = "short"\n    secret-key = "short"\n')
    missing = tmp_path / "missing.key_secret"
    with pytest.raises(CurveKeyError, match=f"{missing}: no such file"):
        CurveServer.from_files(missing, keys.authorized)
    with pytest.raises(CurveKeyError, match=f"{garbage}: the public-key is not a 40-character"):
        load_key_pair(garbage)
    with pytest.raises(CurveKeyError, match=f"{keys.public('client')}: no secret-key"):
        CurveClient.from_files(keys.public("server"), keys.public("client"))  # the public file given as secret
    (tmp_path / "empty.key").write_text("nothing here\n")
    with pytest.raises(CurveKeyError, match=f"{tmp_path / 'empty.key'}: no public-key"):
        load_public_key(tmp_path / "empty.key")
    with pytest.raises(CurveKeyError, match="authorized keys folder .*nowhere does not exist"):
        CurveServer.from_files(keys.secret("server"), tmp_path / "nowhere")
    with pytest.raises(CurveKeyError, match="already exists"):
        generate_key_pair(keys.root, "server")
    with pytest.raises(CurveKeyError, match=f"{missing}"):
        open_publisher(BusConfig(publish=ANY_PORT, snapshot="", curve_server_secret=str(missing),
                                 curve_authorized_dir=str(keys.authorized)), "bad")


def test_exposed_secret_key_files_are_warned_about_and_repr_hides_keys(
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    secret = keys.secret("client")
    assert secret.stat().st_mode & 0o777 == 0o600
    with caplog.at_level(logging.WARNING, "dope.transport.curve"):
        load_key_pair(secret)
        assert "accessible by group/others" not in caplog.text
        secret.chmod(0o644)
        load_key_pair(secret)
    assert f"secret key file {secret} is accessible by group/others (mode 0644)" in caplog.text
    client = keys.client("client")
    assert client.secret_key.decode() not in repr(client) and client.server_key.decode() not in repr(client)


def test_binding_beyond_loopback_without_curve_is_refused_unless_allowed(
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(BusError, match=r"refusing to bind 'tcp://\*:0' without CURVE"):
        ZmqPublisher("tcp://*:0", "open")
    with pytest.raises(BusError, match="refusing to bind 'tcp://192.0.2.1:0'"):
        ZmqPublisher(ANY_PORT, "open", snapshot_endpoint="tcp://192.0.2.1:0")
    with caplog.at_level(logging.WARNING, "dope.transport.curve"):
        check_plaintext_bind("tcp://0.0.0.0:5555", curve=False, allow=True)
        check_plaintext_bind("tcp://0.0.0.0:5556", curve=True, allow=False)
    assert "tcp://0.0.0.0:5555 is reachable beyond this machine WITHOUT encryption" in caplog.text
    assert "5556" not in caplog.text
    local = ["tcp://127.0.0.1:1", "tcp://localhost:1", "tcp://[::1]:1", "ipc:///tmp/x", "inproc://x"]
    assert all(is_local_endpoint(e) for e in local)
    assert not any(is_local_endpoint(e) for e in ["tcp://*:1", "tcp://eth0:1", "tcp://169.254.1.1:1", "tcp://[::]:1"])


def test_a_subscriber_connecting_beyond_loopback_without_curve_warns(
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "dope.transport.zmq"):
        ZmqSubscriber(["tcp://192.0.2.1:5555"], ["bar."], snapshot_endpoint="tcp://192.0.2.1:5556").close()
        ZmqSubscriber(["tcp://127.0.0.1:5557", "ipc:///tmp/dope-x.sock"], ["bar."]).close()
        ZmqSubscriber(["tcp://192.0.2.1:5558"], ["bar."], curve=keys.client("client")).close()
    warned = [r.getMessage() for r in caplog.records if "WITHOUT encryption" in r.getMessage()]
    assert len(warned) == 2 and "tcp://192.0.2.1:5555" in warned[0] and "tcp://192.0.2.1:5556" in warned[1]
    assert "5557" not in caplog.text and "5558" not in caplog.text


def test_authorized_keys_are_reread_when_the_folder_changes(keys: Keys) -> None:
    authorizer = KeyAuthorizer(keys.authorized, "test")
    client = load_public_key(keys.public("client"))
    intruder = load_public_key(keys.public("intruder"))
    assert authorizer.callback("*", client) and not authorizer.callback("*", intruder)
    (keys.authorized / "client.key").unlink()  # revoke
    assert not authorizer.callback("*", client)
    assert (authorizer.allowed, authorizer.denied, authorizer.key_count) == (1, 2, 0)
