"""Commands about who commands the fleet: keygen, job, revoke, broker-config, enroll.

``fleetbench job`` does not speak to devices itself: it queues the job in the
coordinator's database, and the running coordinator signs it with its key (which only
it reads) and sends it; the results it prints are the ones the coordinator stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from agent.common.args import EXIT_FAILED, EXIT_OK, percent_grid, whole
from agent.common.errors import UsageError
from agent.common.files import check_writable
from coordinator.cli.format import print_table
from coordinator.cli.service import EPILOG_CONFIG, _common, _config, _open
from coordinator.extras import need

#: the acks that end a job on a device


def register(sub: Any) -> None:
    keygen = sub.add_parser(
        "keygen",
        help="make (or rotate) the coordinator's signing key; print the public key devices pin",
        description=(
            "Write a new Ed25519 private key (mode 0600) to --key (default: STATE_DIR/coordinator.key) "
            "and print its public key.  Put that line in every device's config, under [models] "
            "public_key: devices take only jobs and pushes this key signed.  --rotate retires the "
            "current key and makes a new one; the running coordinator tells every device the new "
            "key under the old key's signature."
        ),
        epilog=EPILOG_CONFIG,
    )
    _common(keygen)
    keygen.add_argument("--key", metavar="FILE", help="the private key file (push.key_file)")
    what = keygen.add_mutually_exclusive_group()
    what.add_argument("--show", action="store_true", help="print the public key of the existing key")
    what.add_argument("--rotate", action="store_true", help="retire the current key and make a new one")
    keygen.set_defaults(func=cmd_keygen)

    job = sub.add_parser(
        "job",
        help="benchmark models on a device or a SKU's devices, signed by the coordinator",
        description=(
            "Queue a benchmark job for --device ID, or for every device of --sku SKU; the running "
            "coordinator signs it for each device and sends it.  MODEL is a file in the device's "
            "model directory (relative to it) or example:NAME.  The results are printed as they "
            "arrive.  Exit 0 when every device measured every model, 1 when one failed, refused "
            "or did not finish in --timeout."
        ),
        epilog="Examples: fleetbench job --device shed-pi-3 mobilenet_v2.tflite --runs 100\n"
        "fleetbench job --sku 'Raspberry Pi 4 Model B' --lut resnet56 --widths 25,50,75,100 --lut-dir luts/\n"
        + EPILOG_CONFIG,
    )
    job.add_argument("models", nargs="*", metavar="MODEL")
    job.add_argument(
        "--lut",
        metavar="SPACE",
        help="also build a lookup table of SPACE on each device (a family's: a width table)",
    )
    job.add_argument(
        "--widths",
        type=percent_grid,
        metavar="GRID",
        help="--lut of a family: widths in percent of each layer (default 25,50,75,100)",
    )
    job.add_argument(
        "--sample",
        type=whole(2),
        default=30,
        metavar="N",
        help="--lut: architectures (width specs) timed whole to check it (default 30)",
    )
    job.add_argument(
        "--lut-dir",
        default=".",
        metavar="DIR",
        help="where each device's table is written, as DEVICE-lut.csv (default: here)",
    )
    target = job.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID")
    target.add_argument("--sku", metavar="SKU")
    job.add_argument("--runs", type=int, metavar="N", help="measured runs (default: the device's, 50)")
    job.add_argument("--warmup-runs", type=int, metavar="N")
    job.add_argument("--threads", type=int, metavar="N")
    job.add_argument("--min-time", type=float, metavar="S", help="measure at least this long")
    job.add_argument("--max-time", type=float, metavar="S", help="measure at most this long")
    job.add_argument("--backend", choices=["auto", "onnxruntime", "litert"])
    job.add_argument("--format", choices=["table", "json"], default="table",
                     help="json: one result record per line, as the device sent it")  # fmt: skip
    job.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="default 3600")
    job.add_argument("--no-wait", action="store_true", help="queue the job and return")
    _common(job)
    job.set_defaults(func=cmd_job)

    revoke = sub.add_parser(
        "revoke",
        help="remove a device from the fleet",
        description=(
            "Take DEVICE out of the fleet: the coordinator refuses what it sends from now on (kept as "
            "dead letters), cancels its pushes and jobs not yet sent, and forgets its place in the "
            "fleet.  With the broker profile (`fleetbench broker-config`), its broker identity is "
            "revoked too: its certificate goes on the CRL and its ACL entry is removed."
        ),
        epilog=EPILOG_CONFIG,
    )
    revoke.add_argument("device", metavar="DEVICE")
    revoke.add_argument("--reason", default="revoked by the operator", help="kept with the revocation")
    revoke.add_argument("--dir", metavar="DIR", help="the broker profile (default: STATE_DIR/broker)")
    _common(revoke)
    revoke.set_defaults(func=cmd_revoke)

    profile = sub.add_parser(
        "broker-config",
        help="write a mosquitto configuration with a certificate per device (mutual TLS, ACLs)",
        description=(
            "Write the broker profile into --dir (default: STATE_DIR/broker): a mosquitto.conf to "
            "start as it is (`mosquitto -c DIR/mosquitto.conf`), a CA, the broker's certificate for "
            "--host, an ACL in which a device publishes only under its own id and reads only its own "
            "jobs and pushes, a CRL, and the queue settings that keep messages while the coordinator "
            "is down.  Then `fleetbench enroll` issues each device and coordinator its identity."
        ),
        epilog="Example: fleetbench broker-config --host hub.example.org --host 192.168.1.10\n"
        + EPILOG_CONFIG,
    )
    profile.add_argument("--dir", metavar="DIR", help="where to write it (default: STATE_DIR/broker)")
    profile.add_argument("--host", action="append", default=[], metavar="NAME",
                         help="a name or address devices reach the broker by (repeat; default: this "
                              "host's name, localhost, 127.0.0.1)")  # fmt: skip
    profile.add_argument("--port", type=int, default=8883, help="the TLS listener's port (default 8883)")
    profile.add_argument("--bind", metavar="ADDRESS", help="listen on this address only (default: all)")
    profile.add_argument("--user", metavar="NAME", help="the user mosquitto runs as (default: its own)")
    _common(profile)
    profile.set_defaults(func=cmd_broker_config)

    enroll = sub.add_parser(
        "enroll",
        help="issue devices (or a coordinator, or a bridge) their broker identities",
        description=(
            "Issue each NAME a client certificate of the fleet's CA (see broker-config) and allow it in "
            "the ACL: a device NAME (its device id) may publish only under its own id.  Writes "
            "DIR/clients/NAME/: its certificate and key, the CA, and for a device or bridge a "
            "fleetbench.toml with the broker settings and the coordinator's public key to copy to "
            "it (with its key and certificates) and merge into /etc/fleetbench/agent.toml.  Many "
            "names at once (--from FILE) write the profile's lists once: 10,000 devices take seconds.  "
            "Every name is checked first; one already enrolled stops them all."
        ),
        epilog="Examples:\n  fleetbench enroll shed-pi-3 --broker mqtts://hub.example.org:8883\n"
        "  fleetbench enroll --from boards.txt     (one device id a line; # comments)\n" + EPILOG_CONFIG,
    )
    enroll.add_argument("name", metavar="NAME", nargs="*")
    enroll.add_argument("--from", dest="names_from", metavar="FILE",
                        help="also enroll the names in FILE, one a line (- for standard input)")  # fmt: skip
    enroll.add_argument("--role", choices=["device", "bridge", "coordinator"], default="device")
    enroll.add_argument("--broker", metavar="URL", help="the mqtts:// URL the device will use")
    enroll.add_argument("--dir", metavar="DIR", help="the broker profile (default: STATE_DIR/broker)")
    _common(enroll)
    enroll.set_defaults(func=cmd_enroll)


def cmd_keygen(args: argparse.Namespace) -> int:
    need("cryptography", "signing commands")
    from agent.protocol.signing import fingerprint, public_key_of
    from coordinator.keys import generate_key, load_key, rotate_key

    config = _config(args, **{"push.key_file": args.key})
    if args.show:
        public = public_key_of(load_key(config.key_file))
        print(public)
        print(f"fleetbench: fingerprint {fingerprint(public)}", file=sys.stderr)
        return EXIT_OK
    if args.rotate:
        old, public = rotate_key(config.key_file)
        print(f"fleetbench: retired key {fingerprint(old)}; commands are signed by {fingerprint(public)} "
              "from now on.  The running coordinator sends the new key to every device, signed by the "
              "old one.  Pin the new key in the configuration of devices you set up from now on:",
              file=sys.stderr)  # fmt: skip
    else:
        public = generate_key(config.key_file)
        print(f"fleetbench: wrote the signing key {config.key_file}; keep it private", file=sys.stderr)
        print("fleetbench: put this in every device's config (e.g. /etc/fleetbench/agent.toml):",
              file=sys.stderr)  # fmt: skip
    print(f'[models]\npublic_key = "{public}"')
    return EXIT_OK


def _spec(args: argparse.Namespace, job_id: str) -> Any:
    from agent.protocol.jobs import JobSettings, JobSpec

    given = {"runs": args.runs, "warmup_runs": args.warmup_runs, "threads": args.threads,
             "min_time_s": args.min_time, "max_time_s": args.max_time, "backend": args.backend}  # fmt: skip
    import msgspec

    from agent.materialize import SPACES
    from agent.materialize.families import DEFAULT_GRID, FAMILIES
    from agent.protocol.jobs import MAX_LUT_SAMPLE, LutItem, WidthLutItem

    if not args.models and not args.lut:
        raise UsageError("name a MODEL to benchmark, or --lut SPACE")
    if args.lut is not None and args.lut not in SPACES:
        raise UsageError(f"--lut {args.lut!r} is not one of {', '.join(SPACES)}")
    if args.widths is not None and args.lut not in FAMILIES:
        raise UsageError(f"--widths is for --lut of a prunable family ({', '.join(FAMILIES)})")
    if args.lut and args.sample > MAX_LUT_SAMPLE:
        raise UsageError(
            f"--sample {args.sample} is more than a device takes for one table ({MAX_LUT_SAMPLE})"
        )
    try:
        settings = msgspec.convert({k: v for k, v in given.items() if v is not None}, JobSettings)
        lut, width_lut = None, None
        if args.lut in FAMILIES:
            width_lut = WidthLutItem(space=args.lut, grid=args.widths or DEFAULT_GRID, sample=args.sample)
        elif args.lut:
            lut = LutItem(space=args.lut, sample=args.sample)
        return JobSpec(
            job_id=job_id, models=tuple(args.models), lut=lut, width_lut=width_lut, settings=settings
        )
    except (msgspec.ValidationError, ValueError) as err:
        raise UsageError(f"the job is not one a device takes: {err}") from None


def cmd_job(args: argparse.Namespace) -> int:
    from coordinator.fleetjobs import new_job_id, queue

    job_id = new_job_id()
    spec = _spec(args, job_id)  # what is wrong with the request is said before the database is opened
    if spec.tables:
        check_writable(os.path.join(args.lut_dir, "lut.csv"), "--lut-dir")
    config = _config(args)
    store = _open(config)
    if args.device:
        if store.device(args.device) is None:
            raise UsageError(f"--device {args.device!r} is not in the fleet (see `fleetbench fleet`)")
        targets = [args.device]
    else:
        targets = store.devices_of_sku(args.sku)
        if not targets:
            raise UsageError(f"--sku {args.sku!r}: no device of the fleet has it (see `fleetbench fleet`)")
    what = f"{len(spec.models)} model(s)" + "".join(f" and a {t.space} lookup table" for t in spec.tables)
    queue(store, spec, targets)
    print(f"job {job_id}: {what} on {len(targets)} device(s); the running coordinator "
          "signs and sends it", file=sys.stderr)  # fmt: skip
    if args.no_wait:
        print(job_id)
        return EXIT_OK
    return _follow_job(store, job_id, targets, args.format, args.timeout, args.lut_dir)


def _follow_job(
    store: Any, job_id: str, targets: list[str], fmt: str, timeout_s: float, lut_dir: str = "."
) -> int:
    from coordinator.fleetjobs import follow

    rows: list[tuple[Any, ...]] = []

    def show(report: Any) -> None:
        data = report.data
        if report.kind == "result" and data.get("lut") is not None:
            _write_lut(report.device_id, data["lut"], lut_dir)
        elif report.kind == "result":
            _print_result(report.device_id, data, fmt, rows)
        elif data.get("state") not in ("progress", "running"):
            why = data.get("error") or data.get("reason") or data.get("message") or ""
            model = f" {data['model']}" if data.get("model") else ""
            print(
                f"{report.device_id}: {data.get('state')}{model}{': ' + why if why else ''}", file=sys.stderr
            )

    def unsent(device_id: str, detail: str) -> None:
        print(f"{device_id}: not sent: {detail}", file=sys.stderr)

    answers = follow(store, job_id, targets, timeout_s, show, unsent)
    waiting = [d for d, a in answers.items() if a.state == "waiting"]
    if waiting:
        print(f"job {job_id}: no end after {timeout_s:g} s from {', '.join(waiting)}", file=sys.stderr)
        return EXIT_FAILED
    if fmt == "table" and rows:
        print_table(("device", "model", "p50 ms", "p90 ms", "runs", "backend"), rows)
    failed = any(a.state != "done" or a.failed_items for a in answers.values())
    return EXIT_FAILED if failed else EXIT_OK


def _write_lut(device_id: str, table: dict[str, Any], directory: str) -> None:
    from agent.materialize.lut import write_csv

    path = os.path.join(directory, f"{device_id}-lut.csv")
    write_csv(path, table.get("rows") or [])
    srcc = table.get("srcc")
    ranks = (
        f"; the sums of layers rank {len(table.get('archs') or [])} whole models with SRCC {srcc:.3f}"
        if srcc is not None
        else ""
    )
    layers = len(table.get("rows") or [])
    print(
        f"{device_id}: wrote its {table.get('space')} table ({layers} layers) to {path}{ranks}",
        file=sys.stderr,
    )


def _print_result(device_id: str, data: dict[str, Any], fmt: str, rows: list[tuple[Any, ...]]) -> None:
    if fmt == "json":
        print(json.dumps({"device_id": device_id, **data}), flush=True)
        return
    result = data.get("result") or {}
    stats = result.get("stats") or {}
    backend = (result.get("backend") or {}).get("name", "")
    rows.append((device_id, data.get("model"), f"{stats.get('p50_ms', float('nan')):.3f}",
                 f"{stats.get('p90_ms', float('nan')):.3f}", stats.get("n", ""), backend))  # fmt: skip
    print(
        f"{device_id}: {data.get('model')}: p50 {stats.get('p50_ms', float('nan')):.3f} ms", file=sys.stderr
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _open(config)
    from agent.protocol.topics import check_device_id

    check_device_id(args.device)
    known = store.device(args.device) is not None
    if not store.revoke(args.device, time.time(), args.reason):
        print(f"fleetbench: {args.device} was already revoked", file=sys.stderr)
    else:
        print(f"fleetbench: {args.device} is revoked{'' if known else ' (it was not in the fleet)'}: what it "
              "sends is refused from now on", file=sys.stderr)  # fmt: skip
    from coordinator.broker import revoke_identity

    for line in revoke_identity(_profile_dir(config, args.dir), args.device):
        print(f"fleetbench: {line}", file=sys.stderr)
    return EXIT_OK


def _names_from(path: str) -> list[str]:
    """The names in ``path`` (``-``: standard input), one a line; blank lines and # comments skipped."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--from {path}: cannot read the names: {err}") from None
    return [n for n in (line.split("#", 1)[0].strip() for line in text.splitlines()) if n]


def _profile_dir(config: Any, given: Any) -> str:
    import os

    return given or os.path.join(config.state_dir, "broker")


def cmd_broker_config(args: argparse.Namespace) -> int:
    need("cryptography", "making certificates")
    from coordinator.broker import make_profile

    config = _config(args)
    directory = _profile_dir(config, args.dir)
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} must be 1-65535")
    written = make_profile(directory, tuple(args.host), args.port, args.bind, args.user)
    print(f"fleetbench: wrote the broker profile in {directory}:", file=sys.stderr)
    for path in written:
        print(f"  {path}", file=sys.stderr)
    print("fleetbench: start the broker with it, then enroll the coordinator and each device:\n"
          f"  mosquitto -c {written[0]}\n  fleetbench enroll fleetbench-coordinator --role coordinator\n"
          "  fleetbench enroll DEVICE_ID --broker mqtts://HOST:PORT", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def cmd_enroll(args: argparse.Namespace) -> int:
    need("cryptography", "making certificates")
    from agent.common.progress import ProgressLine
    from agent.protocol.signing import public_key_of
    from coordinator.broker import enroll_many
    from coordinator.keys import SigningKeyError, load_key

    names = list(args.name) + (_names_from(args.names_from) if args.names_from else [])
    if not names:
        raise UsageError("name at least one identity to enroll (NAME, or --from FILE)")
    config = _config(args)
    try:
        public = public_key_of(load_key(config.key_file))
    except SigningKeyError:
        public = None
    line = ProgressLine(quiet=len(names) < 100)
    written = enroll_many(
        _profile_dir(config, args.dir), names, args.role, args.broker or config.broker.url, public,
        progress=lambda k: line(f"enrolled {k:,} of {len(names):,}") if k % 100 == 0 else None,
    )  # fmt: skip
    line.clear()
    print("\n".join(written))
    out = written[0] if len(written) == 1 else os.path.join(os.path.dirname(written[0]), "NAME")
    who = f"{names[0]} is" if len(names) == 1 else f"{len(names):,} identities are"
    print(f"fleetbench: {who} enrolled ({args.role}); copy {out} to it: the .crt, .key (mode 0600) "
          "and ca.crt to /etc/fleetbench/"
          + (", and merge fleetbench.toml into /etc/fleetbench/agent.toml" if args.role != "coordinator"
             else "; and point the coordinator's [broker] ca_file, cert_file and key_file at them"),
          file=sys.stderr)  # fmt: skip
    if public is None and args.role != "coordinator":
        print("fleetbench: note: no signing key yet (`fleetbench keygen`): add [models] public_key to the "
              "device's settings once there is one", file=sys.stderr)  # fmt: skip
    return EXIT_OK
