"""Which commands a device obeys (agent.device.trust), with real Ed25519 keys and files."""

from __future__ import annotations

import os
import stat

import msgspec
import pytest
from keys import FLEET_PUBLIC, key_pair, sealed

from agent.device.trust import WINDOW, Trust
from agent.protocol.jobs import JobSpec
from agent.protocol.signing import KeyGrant, TrustError, fingerprint, seal

DEVICE = "pi-1"
SPEC = JobSpec(job_id="j1", models=("m.onnx",))


def trust(tmp_path, key=FLEET_PUBLIC, **kw) -> Trust:
    return Trust(str(tmp_path), key, **kw)


def test_a_job_sealed_for_this_device_by_the_pinned_key_passes(tmp_path):
    t = trust(tmp_path)
    job = sealed(SPEC, DEVICE)
    t.check(job, DEVICE, "job j1")
    t.consume(job.seq, "job j1")
    assert t.fingerprint == fingerprint(FLEET_PUBLIC)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SPEC, "job j1 is not signed"),
        (lambda: sealed(SPEC, DEVICE, key=key_pair()[0]), "not by the coordinator key this device pins"),
        (lambda: sealed(SPEC, "pi-2"), "is for device 'pi-2', not this one \\('pi-1'\\)"),
        (lambda: sealed(SPEC, DEVICE, ttl_s=60, now=1_000_000.0), "expired at 1970-01-12"),
        # signed, then altered: another model than the coordinator signed
        (
            lambda: msgspec.structs.replace(sealed(SPEC, DEVICE), models=("other.onnx",)),
            "not by the coordinator key",
        ),
    ],
)
def test_what_the_pinned_key_did_not_vouch_for_is_refused_with_why(tmp_path, make, message):
    with pytest.raises(TrustError, match=message):
        trust(tmp_path).check(make(), DEVICE, "job j1")


def test_a_replayed_sequence_number_is_refused_even_after_a_restart(tmp_path):
    job = sealed(SPEC, DEVICE)
    t = trust(tmp_path)
    t.consume(job.seq, "job j1")
    with pytest.raises(TrustError, match="already taken"):
        t.consume(job.seq, "job j1")
    with pytest.raises(TrustError, match="already taken"):
        trust(tmp_path).consume(job.seq, "job j1")  # the window is on disk
    assert stat.S_IMODE(os.stat(tmp_path / "trust.json").st_mode) == 0o600


def test_numbers_out_of_order_are_taken_within_the_window_and_refused_below_it(tmp_path):
    t = trust(tmp_path)
    for seq in range(1000, 1000 + WINDOW):
        t.consume(seq, "c")
    t.consume(5000, "late but new")  # above the oldest kept: taken
    with pytest.raises(TrustError, match="older"):
        t.consume(999, "c")  # below everything kept: could be a replay of a forgotten one


def test_no_pinned_key_refuses_everything_unless_unsigned_is_allowed(tmp_path):
    with pytest.raises(TrustError, match="pins no coordinator key"):
        trust(tmp_path, key=None).check(SPEC, DEVICE, "job j1")
    lab = trust(tmp_path, key=None, allow_unsigned=True)
    lab.check(SPEC, DEVICE, "job j1")
    assert "UNSIGNED COMMANDS ARE ALLOWED" in lab.describe()
    # a pinned key wins over allow_unsigned
    with pytest.raises(TrustError, match="not signed"):
        trust(tmp_path, allow_unsigned=True).check(SPEC, DEVICE, "job j1")


def test_a_key_rotation_signed_by_the_pinned_key_is_kept_across_restarts(tmp_path):
    new_key, new_public = key_pair()
    t = trust(tmp_path)
    grant = sealed(KeyGrant(key=new_public), DEVICE)
    assert t.rotate(grant, DEVICE) == fingerprint(new_public)
    t2 = trust(tmp_path)
    assert t2.key == new_public
    with pytest.raises(TrustError, match="not by the coordinator key"):
        t2.check(sealed(SPEC, DEVICE), DEVICE, "job j1")  # the old key no longer commands it
    t2.check(sealed(SPEC, DEVICE, key=new_key), DEVICE, "job j1")


def test_a_rotation_not_signed_by_the_pinned_key_is_refused(tmp_path):
    attacker, attacker_public = key_pair()
    t = trust(tmp_path)
    with pytest.raises(TrustError, match="not by the coordinator key"):
        t.rotate(seal(KeyGrant(key=attacker_public), DEVICE, 1, 60, attacker), DEVICE)
    assert t.key == FLEET_PUBLIC


def test_an_operator_who_pins_another_key_in_the_config_starts_afresh(tmp_path):
    _, rotated = key_pair()
    trust(tmp_path).rotate(sealed(KeyGrant(key=rotated), DEVICE), DEVICE)
    _, configured = key_pair()
    assert trust(tmp_path, key=configured).key == configured


def test_a_job_signed_with_ints_in_float_fields_verifies_after_the_wire(tmp_path):
    """``warmup_time_s=0`` travels as ``0`` and is read back as ``0.0``: signing must cover what
    the device decodes, not the object as the sender built it."""
    from agent.protocol import messages
    from agent.protocol.jobs import JobSettings

    spec = JobSpec(job_id="j2", models=("m.onnx",), settings=JobSettings(warmup_time_s=0, min_time_s=1))  # type: ignore[arg-type]
    raw = messages.encode(messages.make(messages.JobMessage, DEVICE, sealed(spec, DEVICE)))
    trust(tmp_path).check(messages.decode(raw, "jobs").data, DEVICE, "job j2")
