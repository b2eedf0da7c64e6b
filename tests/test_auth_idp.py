"""Signed tokens from an identity provider (Keycloak, Auth0, Okta…): its JWKS URL and
rotations, its keys as certificates and bare base64, key ids, key sizes, its claims.

The provider is a tiny HTTP server of the test on a free loopback port (:class:`IdP`);
the Palimpsest servers are real ones on loopback too."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from conftest import RunningServer, eventually, free_port, run_server
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.warnings import InsecureKeyLengthWarning
from pycrdt import Doc, Text

from palimpsest import protocol as P
from palimpsest.auth.jwks import JWKSUnavailable
from palimpsest.auth.tokens import JWTAuth
from palimpsest.backend import Backend
from palimpsest.settings import Settings

AUD = "palimpsest"


def new_private(alg: str, bits: int = 2048) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(65537, bits)
    return ec.generate_private_key(ec.SECP256R1() if alg == "ES256" else ec.SECP384R1())


def jwk_of(kid: str, alg: str, private: Any) -> dict[str, Any]:
    algo = jwt.algorithms.get_default_algorithms()["RS256" if alg == "RS256" else "ES256"]
    d: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    d.update(kid=kid, use="sig", alg=alg)
    return d


class IdP:
    """A tiny identity provider: its JWKS at /jwks.json. `add` makes a key and publishes
    it, `retire` unpublishes one; `status` other than 200 plays the provider down;
    `fetches` counts the JWKS requests it answered."""

    def __init__(self) -> None:
        self.private: dict[str, tuple[str, Any]] = {}
        self.published: list[str] = []
        #: raw JWKs published as they are (keys the server must leave out)
        self.extra: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None  # when set, answered instead of the JWKS
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                idp.fetches += 1
                body = idp.body if idp.body is not None else json.dumps(idp.jwks()).encode()
                self.send_response(idp.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/jwks.json"

    def jwks(self) -> dict[str, Any]:
        keys = [jwk_of(kid, *self.private[kid]) for kid in self.published]
        return {"keys": keys + self.extra}

    def add(self, kid: str, alg: str = "RS256", publish: bool = True) -> str:
        self.private[kid] = (alg, new_private(alg))
        if publish:
            self.published.append(kid)
        return kid

    def retire(self, kid: str) -> None:
        self.published.remove(kid)

    def token(self, kid: str | None, sub: str = "ann", **claims: Any) -> str:
        """A token signed with key `kid`, naming it (or the kid of `header_kid`)."""
        header_kid = claims.pop("header_kid", kid)
        alg, private = self.private[kid or ""]
        body = {"sub": sub, "role": "write", "docs": ["*"], "aud": AUD,
                "exp": int(time.time()) + 600, **claims}  # fmt: skip
        with warnings.catch_warnings():  # (a 1024-bit key, on purpose)
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            return jwt.encode(body, private, algorithm=alg,
                              headers={"kid": header_kid} if header_kid else None)  # fmt: skip

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def idp() -> Iterator[IdP]:
    provider = IdP()
    yield provider
    provider.close()


@pytest.fixture
def idp_settings(db_path: Path, settings: Settings, idp: IdP) -> Settings:
    settings.jwt_jwks_url = idp.url
    settings.jwt_audience = AUD
    settings.jwt_jwks_refresh_seconds = 0  # fetched at start and on unknown kids only
    return settings


async def status_of(server: RunningServer, token: str) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {token}"})
    return r.status_code, r.text


async def ws_open(server: RunningServer, token: str) -> tuple[int, str] | None:
    """None when a websocket with `token` is served (the server's sync step 1 arrives),
    else its close code and reason."""
    ws = await websockets.connect(f"{server.ws_url}/idp-doc?token={token}", compression=None)
    try:
        await asyncio.wait_for(ws.recv(), 10)
        return None
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None
        return e.rcvd.code, e.rcvd.reason
    finally:
        await ws.close()


@pytest.fixture
async def idp_server(idp: IdP, idp_settings: Settings) -> AsyncIterator[RunningServer]:
    idp.add("rs-1")
    idp.add("es-1", "ES256")
    async with run_server(idp_settings) as server:
        yield server


# --- 1. the JWKS URL -------------------------------------------------------------------------


async def test_a_jwks_url_follows_the_providers_rotation_without_a_restart(
    idp: IdP, idp_server: RunningServer
) -> None:
    """The provider rotates: it publishes a new key and signs with it at once. A token
    naming the new kid is accepted without a restart (the set is fetched again then);
    garbage kids cannot make the server hammer the provider. Before, there was no JWKS
    URL: each rotation meant converting the JWK by hand and restarting every process."""
    assert idp.fetches == 1  # at start
    for kid in ("rs-1", "es-1"):
        assert (await status_of(idp_server, idp.token(kid)))[0] == 200
        assert await ws_open(idp_server, idp.token(kid)) is None
    assert idp.fetches == 1, "known kids cost the provider nothing"
    idp.add("rs-2")  # the provider rotates and signs with the new key at once
    assert (await status_of(idp_server, idp.token("rs-2")))[0] == 200
    assert await ws_open(idp_server, idp.token("rs-2")) is None
    assert idp.fetches == 2, "one fetch for the unknown kid"
    # a flood of tokens naming kids nobody published: refused, and the provider is
    # asked at most once per 30 s (it was just asked)
    idp.add("forger", publish=False)
    for i in range(20):
        assert (await status_of(idp_server, idp.token("forger", header_kid=f"x{i}")))[0] == 401
    assert idp.fetches == 2


@pytest.mark.parametrize("interval", [0.0, 3600.0])
async def test_the_unknown_kid_refetch_interval_is_a_setting(
    idp: IdP, idp_settings: Settings, interval: float
) -> None:
    """PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS (--jwt-jwks-unknown-kid-seconds) bounds
    how often a token naming an unknown kid fetches the set again: 0 fetches for each
    such token, an hour fetches once in that hour. It was 30 s, fixed."""
    idp.add("rs-1")
    idp.add("forger", publish=False)
    idp_settings.jwt_jwks_unknown_kid_seconds = interval
    async with run_server(idp_settings) as server:
        assert idp.fetches == 1  # at start
        for i in range(3):
            token = idp.token("forger", header_kid=f"x{i}")
            assert (await status_of(server, token))[0] == 401
        assert idp.fetches == (4 if interval == 0 else 2), idp.fetches


async def test_a_retired_key_is_refused_after_a_refresh_and_a_failing_provider_keeps_the_set(
    idp: IdP, idp_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    idp.add("rs-1")
    idp.add("rs-2")
    idp_settings.jwt_jwks_refresh_seconds = 0.05
    old, new = idp.token("rs-1"), idp.token("rs-2")
    async with run_server(idp_settings) as server:
        assert (await status_of(server, old))[0] == 200
        idp.retire("rs-1")
        await eventually(lambda: _refused(server, old), what="the retired key's token refused")
        assert (await status_of(server, new))[0] == 200
        # the provider fails: the last good set is kept, said once
        with caplog.at_level(logging.INFO, logger="palimpsest.auth"):
            idp.status = 503
            seen = idp.fetches
            await eventually(lambda: idp.fetches >= seen + 5, what="refreshes go on")
            assert (await status_of(server, new))[0] == 200
            idp.status = 200
            await eventually(lambda: any("can be fetched again" in r.getMessage()
                                         for r in caplog.records))  # fmt: skip
        kept = [r for r in caplog.records if "the last good set is kept" in r.getMessage()]
        assert len(kept) == 1, [r.getMessage() for r in kept]
        assert "HTTP 503" in kept[0].getMessage() and "RS256 rs-2" in kept[0].getMessage()


async def test_a_token_of_a_key_published_after_a_skipped_fetch_is_refused_by_its_kid(
    idp: IdP, idp_settings: Settings
) -> None:
    """The set holds RS256 k3; a token naming a made-up kid has the set fetched again;
    then the provider publishes ES256 k2 and RS256 k4 and signs with them at once.
    Within the unknown-kid interval no fetch is made for them, and they were refused
    with misleading reasons: "token algorithm 'ES256' is not accepted here (['RS256'])"
    (the algorithm was checked against the keys held, before the kid) and, for k4, only
    that it is not one of the server's keys. Now both are refused by their kid, saying
    that the fetch was skipped and when to retry; the algorithm refusal is kept for a
    key the server has; after the next fetch both are accepted."""
    idp.add("k3")
    idp.add("forger", publish=False)
    idp_settings.jwt_jwks_unknown_kid_seconds = 3600.0  # (no fetch within the test)
    async with run_server(idp_settings) as server:
        code, text = await status_of(server, idp.token("forger", header_kid="made-up"))
        assert code == 401, text
        assert idp.fetches == 2, "the made-up kid had the set fetched again"
        idp.add("k2", "ES256")
        idp.add("k4")
        skipped = (
            r"retry in 3[56]\d\d s: the key set is fetched again for an unknown key id at "
            r"most every 3600 s \(PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS\), last \d+ s ago"
        )
        for kid in ("k2", "k4"):
            head = f"token key id {kid!r} is not one of the server's keys (RS256 k3); "
            code, text = await status_of(server, idp.token(kid))
            assert code == 401, text
            assert json.loads(text)["detail"].startswith(head), text
            assert re.fullmatch(re.escape(head) + skipped, json.loads(text)["detail"]), text
            closed = await ws_open(server, idp.token(kid))
            assert closed is not None and closed[0] == 4401, closed
            # (the close frame's 123 bytes keep the retry)
            assert re.match(re.escape(head) + r"retry in 3[56]\d\d s: ", closed[1]), closed
        assert idp.fetches == 2, "no fetch within the interval"
        # a key the server has, named by a token of another algorithm: the algorithm
        code, text = await status_of(server, idp.token("k2", header_kid="k3"))
        assert code == 401 and "token algorithm 'ES256' is not accepted here" in text, text
        # the next fetch (the timer's) has them: both accepted
        jwks = server.backend.extension(JWTAuth).jwks  # type: ignore[union-attr]
        assert jwks is not None and await jwks.refresh()
        for kid in ("k2", "k4"):
            assert (await status_of(server, idp.token(kid)))[0] == 200
            assert await ws_open(server, idp.token(kid)) is None


async def test_a_connection_opened_with_a_key_the_provider_drops_stays_open_and_is_said(
    idp: IdP, idp_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A key dropped from the set (retired, or leaked) refuses its tokens from the next
    fetch on, but a socket opened with one is not cut: it keeps writing until its
    token's exp (docs/security.md, "a key dropped from the set"). Nothing said so; the
    log now names the dropped key and how to cut its connections."""
    idp.add("k3")
    idp.add("k5")
    idp_settings.jwt_jwks_refresh_seconds = 0.05
    old = idp.token("k3")
    with caplog.at_level(logging.INFO, logger="palimpsest.auth"):
        async with run_server(idp_settings) as server:
            ws = await websockets.connect(f"{server.ws_url}/kept?token={old}", compression=None)
            try:
                await asyncio.wait_for(ws.recv(), 10)  # served: the server's sync step 1
                idp.retire("k3")
                await eventually(lambda: _refused(server, old), what="k3's token refused")
                code, text = await status_of(server, old)
                assert code == 401 and "token key id 'k3' is not one of the server's" in text
                # the socket opened with it still writes
                d: Doc = Doc(client_id=4242)
                d.get("content", type=Text).insert(0, "still here")
                await ws.send(P.encode_sync_update(d.get_update()))

                def content() -> str:
                    room = server.backend.rooms.get_loaded("kept")
                    return "" if room is None else str(room.doc.get("content", type=Text))

                await eventually(lambda: content() == "still here", what="the write kept")
                assert ws.close_code is None, (ws.close_code, ws.close_reason)
            finally:
                await ws.close()
    said = [r for r in caplog.records if "no longer holds" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    assert said[0].getMessage() == (
        f"auth: JWKS {idp.url} no longer holds RS256 k3: tokens signed with it are refused "
        "from now on; connections opened with one stay open until their token's exp (to "
        "cut them: revoke their users, or restart)"
    )


class TricklingIdP:
    """An identity provider on an asyncio server of the test's own (a free loopback
    port) that answers its JWKS whole, or, with `trickle` set, one byte at a time (the
    status line and headers too), a byte every `gap` seconds: each read under httpx's
    per-read timeout, the whole answer never in time. `open` counts its connections
    still open (a fetch given up closes its own)."""

    def __init__(self, idp: IdP, gap: float = 0.2) -> None:
        self.idp = idp
        self.gap = gap
        self.trickle = False
        self.open = 0
        self.trickled = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TricklingIdP:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/jwks.json"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps(self.idp.jwks()).encode()
            answer = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            if not self.trickle:
                writer.write(answer)
                await writer.drain()
                return
            self.trickled += 1
            for i in range(len(answer)):
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(self.gap)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()


async def test_a_jwks_that_trickles_is_given_up_and_a_token_with_a_new_kid_told_why(
    idp: IdP, idp_settings: Settings
) -> None:
    """A provider (or a proxy before it) that sends its JWKS a byte every few seconds
    held the fetch for as long as it trickled (httpx's timeout is per read): a token
    naming a new kid waited out the hook timeout and got 500 ExtensionFailed, and every
    later fetch joined the stuck one, so no rotation was followed. Now a fetch has
    JWT_JWKS_FETCH_SECONDS in all: the token is refused with a 401 saying the key is
    unknown and why the set could not be fetched, the stuck fetch's connection is
    closed, and the next refresh starts afresh (and follows the rotation once the
    provider answers again)."""
    idp.add("rs-1")
    async with TricklingIdP(idp) as provider:
        idp_settings.jwt_jwks_url = provider.url
        idp_settings.jwt_jwks_fetch_seconds = 1.0
        idp_settings.jwt_jwks_refresh_seconds = 0.5
        idp_settings.hook_timeout_seconds = 5.0  # (before: a 500 after these)
        async with run_server(idp_settings) as server:
            provider.trickle = True
            idp.add("rs-2")  # the provider rotates; its set now trickles
            await eventually(lambda: provider.trickled >= 1, what="a refresh trickles")
            code, text = await status_of(server, idp.token("rs-2"))
            assert code == 401, text
            assert "token key id 'rs-2' is not one of the server's keys (RS256 rs-1)" in text
            assert "the JWKS could not be fetched to look for it: cannot fetch" in text, text
            assert "no whole answer within 1 s" in text, text
            assert (await ws_open(server, idp.token("rs-2")))[0] == 4401  # type: ignore[index]
            # the key the server has still verifies; refreshes go on, each given up
            assert (await status_of(server, idp.token("rs-1")))[0] == 200
            seen = provider.trickled
            await eventually(lambda: provider.trickled >= seen + 2, what="refreshes go on")
            provider.trickle = False
            await eventually(lambda: provider.open == 0, what="given-up fetches closed")
            # (the on-demand fetch was made less than 30 s ago: the timer follows it)
            await eventually(lambda: _accepted(server, idp.token("rs-2")),
                             what="the rotation followed")  # fmt: skip


def test_a_jwks_fetch_deadline_past_the_hook_timeout_is_refused(idp_settings: Settings) -> None:
    """A token naming a new kid waits for the fetch under the authenticate hook's
    timeout: a fetch allowed longer would turn the 401 that says why into a 500."""
    idp_settings.jwt_jwks_fetch_seconds = 30.0
    with pytest.raises(ValueError, match=r"jwt_jwks_fetch_seconds .* \(30\) must be below"):
        idp_settings.check()


async def _accepted(server: RunningServer, token: str) -> bool:
    return (await status_of(server, token))[0] == 200


async def _refused(server: RunningServer, token: str) -> bool:
    return (await status_of(server, token))[0] == 401


def weak_rsa_jwk(kid: str) -> dict[str, Any]:
    return jwk_of(kid, "RS256", new_private("RS256", 1024))


@pytest.mark.parametrize(
    ("what", "says"),
    [
        ("nobody", "cannot fetch"),
        ("404", "answered HTTP 404"),
        ("not json", "did not answer JSON"),
        ("openid", "an OpenID configuration, whose JWKS is http://idp.example/certs"),
        ("unusable", "holds no usable key (4 keys"),
    ],
)
async def test_a_jwks_that_cannot_be_had_stops_the_start(
    idp: IdP, idp_settings: Settings, what: str, says: str
) -> None:
    if what == "nobody":
        idp_settings.jwt_jwks_url = f"http://127.0.0.1:{free_port()}/jwks.json"
    elif what == "404":
        idp.status = 404
    elif what == "not json":
        idp.body = b"<html>login</html>"
    elif what == "openid":
        idp.body = json.dumps({"issuer": "x", "jwks_uri": "http://idp.example/certs"}).encode()
    else:  # a shared secret, a 1024-bit RSA key, a P-384 key, an encryption key
        idp.extra = [
            {"kty": "oct", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
            weak_rsa_jwk("weak"),
            {**jwk_of("p384", "ES256", new_private("ES384")), "alg": "ES384"},
            {**jwk_of("enc", "RS256", new_private("RS256")), "use": "enc"},
        ]
    backend = Backend(idp_settings)
    with pytest.raises(JWKSUnavailable, match="--jwt-jwks-url: ") as e:
        await backend.start()
    assert says in str(e.value), str(e.value)
    assert not await asyncio.to_thread(os.path.exists, idp_settings.db), "no database left"


async def test_keys_the_server_cannot_use_are_left_out_of_the_set_and_said(
    idp: IdP, idp_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    idp.add("rs-1")
    idp.private["weak"] = ("RS256", new_private("RS256", 1024))
    secret = {"kty": "oct", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}
    idp.extra = [jwk_of("weak", "RS256", idp.private["weak"][1]), secret]
    with caplog.at_level(logging.INFO, logger="palimpsest.auth"):
        async with run_server(idp_settings) as server:
            auth = server.backend.extension(JWTAuth)
            assert auth is not None and [k.kid for k in auth.keys] == ["rs-1"]
            assert (await status_of(server, idp.token("rs-1")))[0] == 200
            assert (await status_of(server, idp.token("weak")))[0] == 401
            hs = jwt.encode({"sub": "eve", "role": "admin", "docs": ["*"], "aud": AUD,
                             "exp": int(time.time()) + 60},
                            b"secret-secret-secret-secret-secret", algorithm="HS256",
                            headers={"kid": "hs"})  # fmt: skip
            code, text = await status_of(server, hs)
            # (left out: its kid is none of the server's, whatever its algorithm)
            assert code == 401 and "token key id 'hs' is not one of the server's" in text, text
            unnamed = jwt.encode({"sub": "eve", "role": "admin", "docs": ["*"], "aud": AUD,
                                  "exp": int(time.time()) + 60},
                                 b"secret-secret-secret-secret-secret",
                                 algorithm="HS256")  # fmt: skip
            code, text = await status_of(server, unnamed)
            assert code == 401 and "algorithm 'HS256' is not accepted" in text, text
    said = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert any("key 'weak'" in m and "1024-bit RSA" in m for m in said), said
    assert any("key 'hs'" in m and "kty 'oct'" in m for m in said), said


def test_serve_with_a_jwks_nobody_serves_says_so_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "serve", "--port", str(free_port()),
         "--db", str(tmp_path / "p.db"), "--jwt-jwks-url", url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert f"palimpsest: cannot start: --jwt-jwks-url: cannot fetch {url}" in r.stderr, r.stderr


# --- 2. keys as identity providers hand them out ---------------------------------------------


def certificate_pem(private: Any) -> bytes:
    """A self-signed X.509 certificate of the key (what Auth0's "Download certificate"
    and Keycloak's "Certificate" give)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-idp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
        .sign(private, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def spki(private: Any, encoding: str = "PEM") -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        private.public_key().public_bytes(
            getattr(serialization.Encoding, encoding),
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


@pytest.mark.parametrize(
    "form",
    ["certificate file", "base64 file", "DER file", "PEM in the variable",
     "certificate in the variable", "base64 in the variable"],
)  # fmt: skip
async def test_a_public_key_may_be_a_certificate_bare_base64_or_the_pem_itself(
    form: str, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a certificate was "Valid PEM but no BEGIN PUBLIC KEY delimiters", Keycloak's
    base64 "MalformedFraming", and the PEM in PALIMPSEST_JWT_PUBLIC_KEY (a Kubernetes
    secret as a variable) "No such file or directory: '-----BEGIN PUBLIC KEY-----…'"."""
    import base64

    private = new_private("RS256")
    value = {
        "certificate file": certificate_pem(private),
        "base64 file": base64.b64encode(spki(private, "DER")),
        "DER file": spki(private, "DER"),
        "PEM in the variable": spki(private),
        "certificate in the variable": certificate_pem(private),
        "base64 in the variable": base64.b64encode(spki(private, "DER")),
    }[form]
    if form.endswith("file"):
        path = tmp_path / "idp.key"
        path.write_bytes(value)
        monkeypatch.setenv("PALIMPSEST_JWT_PUBLIC_KEY", f"kc-1:{path}")
    else:
        monkeypatch.setenv("PALIMPSEST_JWT_PUBLIC_KEY", value.decode())
    settings = Settings.from_env(db=str(db_path), port=free_port())
    async with run_server(settings) as server:
        auth = server.backend.extension(JWTAuth)
        assert auth is not None and [k.alg for k in auth.keys] == ["RS256"]
        tok = jwt.encode({"sub": "kim", "role": "read", "docs": ["*"],
                          "exp": int(time.time()) + 60}, private, algorithm="RS256",
                         headers={"kid": "kc-1"})  # fmt: skip
        assert (await status_of(server, tok))[0] == 200
    from palimpsest.auth.tokens import auth_banner

    banner = auth_banner(settings)
    assert "-----BEGIN" not in banner and "MII" not in banner, banner


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            "http://127.0.0.1:21001/jwks.json",
            "not a URL (http://127.0.0.1:21001/jwks.json): use --jwt-jwks-url",
        ),
        ("idp:https://sso.example.com/certs", "use --jwt-jwks-url"),
        ("{key}", "holds JSON (a JWK or a JWKS?)"),
        ("{private}", "is a PEM PRIVATE KEY (a private key: give its public key)"),
        ("{two}", "holds 2 PEM blocks"),
        ("{garbage}", "is no public key: expected a PEM public key or certificate"),
    ],
)
def test_a_public_key_that_is_none_is_refused_saying_what_it_is(
    value: str, says: str, settings: Settings, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    private = new_private("ES256")
    files = {
        "{key}": json.dumps(jwk_of("k", "ES256", private)).encode(),
        "{private}": private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
        "{two}": spki(private) + spki(new_private("ES256")),
        "{garbage}": b"hello\n",
    }  # fmt: skip
    if value in files:
        (tmp_path / "k.pem").write_bytes(files[value])
        value = str(tmp_path / "k.pem")
    settings.jwt_public_key = value
    with pytest.raises(ValueError, match=re.escape(says)):
        Backend(settings)


# --- 3. a kid the server lacks ---------------------------------------------------------------


async def test_a_token_naming_a_kid_the_server_lacks_says_so(
    idp: IdP, idp_server: RunningServer, tmp_path: Path
) -> None:
    """During a rotation the one thing an operator needs to know is that the token's key
    is not one the server has; it said only "token signature does not verify". And a
    token naming an unknown kid that a configured key verified was accepted: a kid names
    one key, so it is refused now, unless a key without a kid is configured (a PEM the
    operator did not name: the provider's kid may be its)."""
    idp.add("rs-9", publish=False)
    idp.add("forger", publish=False)
    code, text = await status_of(idp_server, idp.token("rs-9"))
    assert code == 401, text
    says = "token key id 'rs-9' is not one of the server's keys (RS256 rs-1, ES256 es-1)"
    assert says in text
    # (the set was just fetched for rs-9: not again within 30 s, and the reason says so)
    closed = await ws_open(idp_server, idp.token("rs-9"))
    assert closed is not None and closed[0] == 4401, closed
    assert re.fullmatch(re.escape(says) + r"; retry in \d+ s: the key set is fetched…", closed[1])
    # signed with a key the server has, naming another kid: refused too
    code, text = await status_of(idp_server, idp.token("rs-1", header_kid="rs-2"))
    assert code == 401 and "token key id 'rs-2' is not one" in text, text
    # a key configured without a kid verifies tokens naming any kid it does not know
    pem = tmp_path / "idp.pem"
    pem.write_bytes(spki(idp.private["rs-9"][1]))
    settings = Settings(db=str(tmp_path / "b.db"), port=free_port(), jwt_public_key=str(pem))
    async with run_server(settings) as server:
        assert (await status_of(server, idp.token("rs-9")))[0] == 200
        code, text = await status_of(server, idp.token("forger", header_kid="rs-9"))
        assert code == 401 and "token signature does not verify" in text, text
        assert "key id 'rs-9' is none of the server's: tried the keys without a kid" in text


# --- 4. weak keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["PEM file", "certificate", "inline PEM"])
def test_a_1024_bit_rsa_key_is_refused_at_start(
    form: str, settings: Settings, tmp_path: Path
) -> None:
    """An HS256 secret under 32 bytes was refused at start; a 1024-bit RSA public key was
    taken without a word (whoever factors it mints tokens for anyone)."""
    weak = new_private("RS256", 1024)
    value = certificate_pem(weak) if form == "certificate" else spki(weak)
    if form == "inline PEM":
        settings.jwt_public_key = f"old:{value.decode()}"
    else:
        (tmp_path / "weak.pem").write_bytes(value)
        settings.jwt_public_key = f"old:{tmp_path / 'weak.pem'}"
    with pytest.raises(ValueError, match="is a 1024-bit RSA key: RS256 needs at least 2048"):
        Backend(settings)


def test_serve_refuses_a_1024_bit_rsa_key_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "weak.pem").write_bytes(spki(new_private("RS256", 1024)))
    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "serve", "--port", str(free_port()),
         "--db", str(tmp_path / "p.db"), "--jwt-public-key", str(tmp_path / "weak.pem")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert (
        f"palimpsest serve: error: the JWT public key {tmp_path / 'weak.pem'} is a 1024-bit "
        "RSA key: RS256 needs at least 2048 bits"
    ) in r.stderr, r.stderr
    assert not (tmp_path / "p.db").exists()


# --- 5. claims as providers write them -------------------------------------------------------


async def test_role_as_a_list_and_docs_as_a_space_separated_string(
    idp: IdP, idp_server: RunningServer
) -> None:
    """Keycloak-style ``role: ["write"]`` was refused; ``docs: "team-* notes"`` (written
    as OAuth's scope is) was one pattern that matches no name, and granted nothing
    without a word. A role list grants the highest role it holds (other entries, a
    provider's roles for other applications, are ignored); a docs string is its
    patterns separated by spaces or tabs (document names hold neither), and a blank one
    is refused."""
    async with httpx.AsyncClient(base_url=idp_server.url) as http:

        async def put(doc: str, **claims: Any) -> tuple[int, str]:
            tok = idp.token("rs-1", **claims)
            r = await http.put(f"/api/docs/{doc}/text", json={"text": "hi"},
                               headers={"authorization": f"Bearer {tok}"})  # fmt: skip
            return r.status_code, r.text

        assert (await put("team-a", role=["offline_access", "write"]))[0] == 200
        assert (await put("team-a", role=["read", "admin", "write"]))[0] == 200
        code, text = await put("team-a", role=["read"])
        assert code == 403, text  # read: no writes
        # edit ranks between read and write: the highest held decides, and edit may
        # not put text (a history write)
        assert (await put("team-a", role=["edit", "write"]))[0] == 200
        code, text = await put("team-a", role=["read", "edit"])
        assert code == 403 and "role 'edit' may not do this: it needs role 'write'" in text, text
        code, text = await put("team-a", role=["offline_access"])
        assert code == 401 and "token claim 'role' must be one of read, edit, write, admin" in text
        assert (await put("team-a", docs="team-* notes"))[0] == 200
        assert (await put("notes", docs="team-* notes"))[0] == 200
        code, text = await put("other", docs="team-* notes")
        assert code == 403, text
        # spaces and tabs separate, no other whitespace: "x\u00a0notes" granted notes
        assert (await put("notes", docs="team-*\t notes"))[0] == 200
        for doc in ("notes", "team-a"):
            code, text = await put(doc, docs="team-a\u00a0notes")
            assert code == 403, text
        # a blank string was taken, and then every document refused with 403
        for blank in ("   ", "", "\t"):
            code, text = await put("notes", docs=blank)
            assert code == 401 and "token claim 'docs' is blank: name the documents" in text, text


def test_a_bare_base64_key_with_a_long_run_between_slashes_loads() -> None:
    """A bare base64 key was first tried as a file name; a run of it between slashes
    longer than a file name may be (255 bytes) made that try raise ENAMETOOLONG, and
    the server refused the key at start, in about one key in twenty. Keys are drawn
    until one has such a run (expected within a few dozen)."""
    import base64

    from palimpsest.auth.keys import describe_source, load_public_key

    for _ in range(500):
        private = new_private("RS256")
        value = base64.b64encode(spki(private, "DER")).decode()
        if max(len(part) for part in value.split("/")) > 255:
            break
    else:
        pytest.fail("no key with a run over 255 characters between slashes in 500 draws")
    assert describe_source(value) == "inline base64 key"
    key = load_public_key(value)
    tok = jwt.encode({"sub": "kim"}, private, algorithm="RS256")
    assert jwt.decode(tok, key, algorithms=["RS256"])["sub"] == "kim"
