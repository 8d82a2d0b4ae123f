"""Issue 14 item 1: MySQL/MariaDB TLS options of the URL (``ssl-mode``, ``ssl-ca``) against a
real TLS server. The shared MariaDB has TLS off, so this module starts its own ``mariadbd``
(``mariadb-install-db`` into a temporary folder, a free port, certificates made by ``trustme``)
and stops it at the end; the shared server is not touched."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import trustme
from cello.config import DatabaseConfig
from cello.database import Database, OperationalError
from conftest import free_port, wait_for_port
from db_helpers import Loop, missing

# mariadbd lives in /usr/sbin, which is not on every PATH.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
CIPHER = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory):
    """A dict with the server's ``url`` (no query), its ``ca``, an ``other_ca`` and ``port``."""
    install = shutil.which("mariadb-install-db", path=_SEARCH)
    server = shutil.which("mariadbd", path=_SEARCH)
    if not install or not server:
        missing("mariadbd/mariadb-install-db are not installed")
    d = tmp_path_factory.mktemp("mariadb-tls")
    ca = trustme.CA()
    # Only the IP: connecting by the name "localhost" tells verify_ca from verify_identity.
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    # Running as root, mariadbd needs --user=root; the normal authentication method gives
    # root@127.0.0.1 without a password.
    init = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={d / 'data'}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed:\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    port = free_port()
    log = d / "err.log"
    # mariadbd changes into its datadir: every path is absolute.
    proc = subprocess.Popen(
        [
            server,
            "--no-defaults",
            f"--datadir={d / 'data'}",
            f"--port={port}",
            f"--socket={d / 'sock'}",
            f"--pid-file={d / 'pid'}",
            f"--log-error={log}",
            "--bind-address=127.0.0.1",
            f"--ssl-cert={d / 'cert.pem'}",
            f"--ssl-key={d / 'key.pem'}",
            f"--ssl-ca={d / 'ca.pem'}",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_for_port("127.0.0.1", port, 60, proc)
        except RuntimeError as e:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"mariadbd did not start: {e}\n{tail}") from e
        yield {
            "url": f"mysql://root@127.0.0.1:{port}/mysql",
            "port": port,
            "ca": str(d / "ca.pem"),
            "other_ca": str(d / "other-ca.pem"),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cipher(loop, url: str) -> str:
    db = loop.run(Database.connect(DatabaseConfig(url, pool_size=1, connection_timeout_secs=5)))
    try:
        row = loop.run(db.fetch_one(CIPHER))
    finally:
        loop.run(db.close())
    value = row[1]
    return value.decode() if isinstance(value, bytes) else value


def test_verify_ca_with_the_ca_connects_over_tls(tls_mariadb, loop):
    # Upper case as docs/database.md writes it (MySQL's spelling).
    url = f"{tls_mariadb['url']}?ssl-mode=VERIFY_CA&ssl-ca={tls_mariadb['ca']}"
    assert _cipher(loop, url) != ""


def test_required_uses_tls_and_disabled_does_not(tls_mariadb, loop):
    assert _cipher(loop, f"{tls_mariadb['url']}?ssl-mode=required") != ""
    assert _cipher(loop, f"{tls_mariadb['url']}?ssl-mode=disabled") == ""


def test_verify_ca_with_a_wrong_ca_is_refused(tls_mariadb, loop):
    url = f"{tls_mariadb['url']}?ssl-mode=verify_ca&ssl-ca={tls_mariadb['other_ca']}"
    with pytest.raises(OperationalError) as err:
        _cipher(loop, url)
    msg = str(err.value).lower()
    assert "certificate" in msg and "unknownissuer" in msg, msg


def test_verify_identity_checks_the_host_name(tls_mariadb, loop):
    """The certificate names 127.0.0.1 only: verify_identity accepts it there and refuses it
    under the name localhost."""
    ca = tls_mariadb["ca"]
    assert _cipher(loop, f"{tls_mariadb['url']}?ssl-mode=verify_identity&ssl-ca={ca}") != ""
    by_name = f"mysql://root@localhost:{tls_mariadb['port']}/mysql?ssl-mode=verify_identity&ssl-ca={ca}"
    with pytest.raises(OperationalError) as err:
        _cipher(loop, by_name)
    assert "not valid for name" in str(err.value).lower(), err.value


@pytest.mark.xfail(
    strict=True,
    raises=OperationalError,
    reason="sqlx-core 0.8.6 ignores only rustls' old NotValidForName error; rustls 0.23.46 reports "
    "NotValidForNameContext, so verify_ca still checks the host name like verify_identity",
)
def test_verify_ca_does_not_check_the_host_name(tls_mariadb, loop):
    by_name = f"mysql://root@localhost:{tls_mariadb['port']}/mysql?ssl-mode=verify_ca&ssl-ca={tls_mariadb['ca']}"
    assert _cipher(loop, by_name) != ""
