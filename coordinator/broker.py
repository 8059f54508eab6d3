"""The broker profile: a mosquitto configuration with an identity per device, made and kept here.

    fleetbench broker-config --host hub.example.org      write the profile (once)
    fleetbench enroll shed-pi-3                            a device's certificate and settings
    fleetbench enroll coordinator-2 --role coordinator     another coordinator instance
    fleetbench revoke shed-pi-3                            its certificate on the CRL

The profile directory (default ``STATE_DIR/broker`` of the coordinator):

    mosquitto.conf        start it as it is: ``mosquitto -c DIR/mosquitto.conf``
    acl                   who may publish and read what (rewritten by enroll and revoke)
    ca.crt, ca.key        the fleet's certificate authority (ca.key: 0600, never leaves here)
    server.crt/.key       the broker's TLS identity, for the --host names and addresses
    crl.pem               revoked certificates (mosquitto reads it at start and on SIGHUP)
    identities.json       every identity issued: name, role, certificate serial, revoked
    clients/NAME/         what an identity needs: ca.crt, NAME.crt, NAME.key, and for a
                          device a ready ``fleetbench.toml`` to merge into its agent.toml
    data/                 mosquitto's persistence (queued messages survive its restart)

Identity is mutual TLS: every client presents a certificate the CA issued, and its
common name becomes its MQTT user name (``use_identity_as_username``) and its client
id (``use_username_as_clientid``), so no client can take over another's session.  The
ACL's ``pattern`` lines use ``%u``: a device publishes only under its own id and reads
only its own jobs and pushes.  Coordinators read and write the whole tree; a firmware
bridge speaks for the boards plugged into it, whatever their ids.

For thousands of devices, mosquitto's dynamic security plugin manages clients, roles
and ACLs at run time over MQTT (``mosquitto_ctrl dynsec ...``) without rewriting files:
README "Securing a fleet" says how; the certificates made here serve it unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from agent.common.errors import UsageError
from agent.common.files import write_bytes_atomic, write_text_atomic
from agent.protocol.topics import check_device_id

ROLES = ("device", "bridge", "coordinator")
CA_DAYS = 3650
CERT_DAYS = 825  # what browsers accept at most; the CA outlives many of them
PORT = 8883

ACL_HEAD = """\
# fleetbench broker ACL, rewritten by `fleetbench enroll` and `fleetbench revoke`.
# A client's user name is its certificate's common name (use_identity_as_username).

# Every device: its own topics only (%u is its user name, which is its device id).
pattern write fleetbench/v1/devices/%u/status
pattern write fleetbench/v1/devices/%u/health
pattern write fleetbench/v1/devices/%u/results
pattern write fleetbench/v1/devices/%u/acks
pattern read fleetbench/v1/devices/%u/jobs
pattern read fleetbench/v1/devices/%u/models
# Home Assistant discovery, for agents with [homeassistant] enabled.
pattern write homeassistant/sensor/fleetbench_%u/#
pattern read homeassistant/status
"""


@dataclass
class Identity:
    name: str
    role: str
    serial: int
    revoked: bool = False


def _files(directory: str) -> dict[str, str]:
    names = (
        "mosquitto.conf",
        "acl",
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "crl.pem",
        "identities.json",
    )
    return {name: os.path.join(directory, name) for name in names}


def _mkdir(path: str, mode: int) -> None:
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as err:
        raise UsageError(f"directory {path!r} cannot be made: {err.strerror}") from None


def _write_private(path: str, data: bytes) -> None:
    write_bytes_atomic(path, data, what="key file", mode=0o600)


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _issue(
    ca_key: Any, ca_cert: Any, name: str, days: int, server_names: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """A key and a certificate for ``name`` signed by the CA (a server's, with its names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server_names:
        alt: list[Any] = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _load(directory: str) -> tuple[Any, Any, list[Identity]]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    f = _files(directory)
    if not os.path.exists(f["ca.key"]):
        raise UsageError(f"{directory!r} holds no broker profile; make one with `fleetbench broker-config`")
    try:
        with open(f["ca.key"], "rb") as fh:
            ca_key = load_pem_private_key(fh.read(), None)
        with open(f["ca.crt"], "rb") as fh:
            ca_cert = x509.load_pem_x509_certificate(fh.read())
        with open(f["identities.json"], encoding="utf-8") as fh:
            identities = [Identity(**i) for i in json.load(fh)]
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"the broker profile in {directory!r} cannot be read: {err}") from None
    return ca_key, ca_cert, identities


def _save(directory: str, ca_key: Any, ca_cert: Any, identities: list[Identity]) -> None:
    """Rewrite what enroll and revoke change: the identities, the ACL, the CRL."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    f = _files(directory)
    write_text_atomic(
        f["identities.json"], json.dumps([asdict(i) for i in identities], indent=1), "identities"
    )
    lines = [ACL_HEAD]
    for i in identities:
        if i.revoked:
            continue
        if i.role == "coordinator":
            lines.append(f"# coordinator\nuser {i.name}\ntopic readwrite fleetbench/v1/#\n")
        elif i.role == "bridge":
            # A bridge speaks for the boards on its serial ports; their ids come from the boards.
            lines.append(
                f"# firmware bridge\nuser {i.name}\n"
                + "".join(
                    f"topic write fleetbench/v1/devices/+/{k}\n"
                    for k in ("status", "health", "results", "acks")
                )
                + "topic read fleetbench/v1/devices/+/jobs\ntopic read fleetbench/v1/devices/+/models\n"
            )
    write_text_atomic(f["acl"], "\n".join(lines), "ACL file")
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(_now() - datetime.timedelta(minutes=5))
        .next_update(_now() + datetime.timedelta(days=CA_DAYS))
    )
    for i in identities:
        if i.revoked:
            crl = crl.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(i.serial).revocation_date(_now()).build()
            )
    write_bytes_atomic(f["crl.pem"], _pem(crl.sign(ca_key, hashes.SHA256())), "CRL file")


def make_profile(
    directory: str,
    hosts: tuple[str, ...],
    port: int = PORT,
    bind: Optional[str] = None,
    user: Optional[str] = None,
    max_queued_messages: int = 1_000_000,
) -> list[str]:
    """Write a new profile into ``directory`` (which must not hold one); the files written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    f = _files(directory)
    if os.path.exists(f["ca.key"]):
        raise UsageError(f"{directory!r} already holds a broker profile; refusing to replace its CA")
    if not hosts:
        hosts = (socket.gethostname(), "localhost", "127.0.0.1")
    _mkdir(os.path.join(directory, "data"), 0o750)
    _mkdir(os.path.join(directory, "clients"), 0o700)
    ca_key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetbench fleet CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(f["ca.key"], _pem_key(ca_key))
    write_bytes_atomic(f["ca.crt"], _pem(ca_cert), "CA certificate")
    server_key, server_cert = _issue(ca_key, ca_cert, hosts[0], CERT_DAYS, hosts)
    _write_private(f["server.key"], _pem_key(server_key))
    write_bytes_atomic(f["server.crt"], _pem(server_cert), "server certificate")
    _save(directory, ca_key, ca_cert, [])
    write_text_atomic(
        f["mosquitto.conf"], _conf(directory, port, bind, user, max_queued_messages), "mosquitto.conf"
    )
    _share_with_broker(directory)
    return [f["mosquitto.conf"], f["acl"], f["ca.crt"], f["server.crt"], f["crl.pem"]]


def _conf(directory: str, port: int, bind: Optional[str], user: Optional[str], max_queued: int) -> str:
    d = os.path.abspath(directory)
    runs_as = (
        f"user {user}"
        if user
        else "# started as root, mosquitto runs as the user mosquitto (files: group mosquitto)"
    )
    return f"""\
# fleetbench broker profile, written by `fleetbench broker-config` on {_now():%Y-%m-%d}.
# Start it as it is:  mosquitto -c {d}/mosquitto.conf
# (or point /etc/mosquitto/conf.d/ at it).  README "Securing a fleet" explains each part.
{runs_as}

# "Nothing lost" lives here as much as in fleetbench: the coordinator's persistent session
# keeps what devices send while it is down, up to max_queued_messages (mosquitto's default,
# 1000, silently dropped the rest), and persistence keeps the queue through a restart.
persistence true
persistence_location {d}/data/
autosave_interval 60
max_queued_messages {max_queued}
# the coordinator's session outlives a week of downtime (its MQTT 5 session expiry is 7 days)
persistent_client_expiration 14d
log_dest stderr
log_type error
log_type warning
log_type notice

# One listener, TLS only, every client with a certificate of this fleet's CA.
per_listener_settings false
allow_anonymous false
listener {port}{f" {bind}" if bind else ""}
cafile {d}/ca.crt
certfile {d}/server.crt
keyfile {d}/server.key
crlfile {d}/crl.pem
require_certificate true
tls_version tlsv1.2
# The certificate's common name is the user name (the device id) and the client id:
# no client can take over another's session, nor speak under another's name.
use_identity_as_username true
use_username_as_clientid true
acl_file {d}/acl
# Messages are at most 128 KiB (fleetbench's limit, AWS IoT's); a little more for the MQTT header.
max_packet_size 140000
"""


def _share_with_broker(directory: str) -> None:
    """Run as root, let the mosquitto user (its group) read what the broker reads."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return
    import grp

    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return
    f = _files(directory)
    for name in ("mosquitto.conf", "acl", "ca.crt", "server.crt", "server.key", "crl.pem"):
        os.chown(f[name], -1, gid)
        os.chmod(f[name], 0o640)
    for sub in ("", "data"):
        os.chown(os.path.join(directory, sub), -1, gid)
        os.chmod(os.path.join(directory, sub), 0o770 if sub else 0o750)


def enroll(directory: str, name: str, role: str = "device", broker_url: Optional[str] = None,
           public_key: Optional[str] = None) -> str:  # fmt: skip
    """Issue ``name`` a client certificate; the directory holding what it needs."""
    return enroll_many(directory, [name], role, broker_url, public_key)[0]


def enroll_many(directory: str, names: Sequence[str], role: str = "device", broker_url: Optional[str] = None,
                public_key: Optional[str] = None, progress: Optional[Callable[[int], None]] = None,
                ) -> list[str]:  # fmt: skip
    """Issue each of ``names`` a client certificate, reading and rewriting the identities, the
    ACL and the CRL once (a fleet of 10,000 in seconds, not hours); each one's directory.
    Every name is checked before anything is written."""
    if role not in ROLES:
        raise UsageError(f"--role {role!r} must be one of {', '.join(ROLES)}")
    for name in names:
        check_device_id(name)
    twice = sorted(n for n, times in Counter(names).items() if times > 1)
    if twice:
        raise UsageError(f"{twice[0]!r} is named twice in the names to enroll")
    ca_key, ca_cert, identities = _load(directory)
    enrolled = {i.name for i in identities if not i.revoked}
    already = [n for n in names if n in enrolled]
    if already:
        raise UsageError(f"{already[0]!r} is enrolled already; revoke it first to issue a new certificate")
    out = []
    try:
        for k, name in enumerate(names):
            out.append(_issue_client(directory, ca_key, ca_cert, name, role, broker_url, public_key))
            identities.append(Identity(name, role, out[-1][1]))
            if progress is not None:
                progress(k + 1)
    finally:  # what was issued is on record even if a later one failed (a full disk)
        _save(directory, ca_key, ca_cert, identities)
    return [path for path, _ in out]


def _issue_client(directory: str, ca_key: Any, ca_cert: Any, name: str, role: str,
                  broker_url: Optional[str], public_key: Optional[str]) -> tuple[str, int]:  # fmt: skip
    """Write ``name``'s key, certificate, CA and settings; its directory and certificate serial."""
    key, cert = _issue(ca_key, ca_cert, name, CERT_DAYS)
    out = os.path.join(directory, "clients", name)
    _mkdir(out, 0o700)
    _write_private(os.path.join(out, f"{name}.key"), _pem_key(key))
    write_bytes_atomic(os.path.join(out, f"{name}.crt"), _pem(cert), "certificate")
    write_bytes_atomic(os.path.join(out, "ca.crt"), _pem(ca_cert), "CA certificate")
    if role != "coordinator":
        toml = [f'device_id = "{name}"\n' if role == "device" else "",
                "[broker]\n", f'url = "{broker_url}"\n' if broker_url else '# url = "mqtts://HOST:8883"\n',
                'ca_file = "/etc/fleetbench/ca.crt"\n', f'cert_file = "/etc/fleetbench/{name}.crt"\n',
                f'key_file = "/etc/fleetbench/{name}.key"\n']  # fmt: skip
        if public_key:
            toml += ["[models]\n", f'public_key = "{public_key}"\n']
        write_text_atomic(os.path.join(out, "fleetbench.toml"), "".join(toml), "device settings")
    return out, cert.serial_number


def revoke_identity(directory: str, name: str) -> list[str]:
    """Put ``name``'s certificate on the CRL and its ACL entry out; what was done, as sentences."""
    if not os.path.exists(_files(directory)["ca.key"]):
        return [f"no broker profile in {directory}: revoke its broker identity where it was issued"]
    ca_key, ca_cert, identities = _load(directory)
    found = [i for i in identities if i.name == name and not i.revoked]
    if not found:
        return [f"{name} has no broker identity in {directory} that is not revoked already"]
    for i in found:
        i.revoked = True
    _save(directory, ca_key, ca_cert, identities)
    return [f"{name}'s certificate is on the CRL ({_files(directory)['crl.pem']}); reload the broker "
            "(systemctl reload mosquitto, or SIGHUP) to refuse its next connection"]  # fmt: skip
