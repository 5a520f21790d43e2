"""rproxy.core.slots: CRC16/XMODEM and Redis Cluster's keyHashSlot, against an independent oracle."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rproxy.core import slots
from rproxy.core.slots import SLOTS, crc16, key_slot

PROPS = settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def oracle_slot(key: bytes) -> int:
    """Independent re-implementation of src/cluster.c keyHashSlot, loop for loop, with
    binascii.crc_hqx (CRC-CCITT/XMODEM when started at 0) as the CRC."""
    keylen = len(key)
    s = 0
    while s < keylen and key[s] != ord("{"):
        s += 1
    if s == keylen:  # no '{'
        return binascii.crc_hqx(key, 0) & 16383
    e = s + 1
    while e < keylen and key[e] != ord("}"):
        e += 1
    if e == keylen or e == s + 1:  # no '}' or nothing between {}
        return binascii.crc_hqx(key, 0) & 16383
    return binascii.crc_hqx(key[s + 1 : e], 0) & 16383


def test_uses_the_c_extension():
    assert slots.USING_C_EXTENSION is True


def test_slot_count():
    assert SLOTS == 16384


@pytest.mark.parametrize(
    "data, crc",
    [
        (b"123456789", 0x31C3),  # the check value of CRC16/XMODEM (src/crc16.c)
        (b"", 0x0000),
        (b"A", binascii.crc_hqx(b"A", 0)),
        (bytes(range(256)), binascii.crc_hqx(bytes(range(256)), 0)),
    ],
)
def test_crc16(data: bytes, crc: int):
    assert crc16(data) == crc


# Slots printed by a real Redis (CLUSTER KEYSLOT examples in the Redis docs and redis-cli).
@pytest.mark.parametrize(
    "key, slot",
    [
        (b"somekey", 11058),
        (b"foo{hash_tag}", 2515),
        (b"somekey{hash_tag}", 2515),
        (b"foo", 12182),
        (b"bar", 5061),
        (b"hello", 866),
        (b"", 0),
    ],
)
def test_known_slots(key: bytes, slot: int):
    assert key_slot(key) == slot


# (key, the bytes Redis hashes for it)
HASH_TAG_CASES = [
    (b"", b""),
    (b"{}", b"{}"),  # empty tag: the whole key
    (b"{}a", b"{}a"),
    (b"a{", b"a{"),  # no closing brace
    (b"{a", b"{a"),
    (b"a}", b"a}"),
    (b"}a{", b"}a{"),
    (b"a}{b}", b"b"),  # the first '{', then the first '}' after it
    (b"{{a}}", b"{a"),
    (b"{a}{b}", b"a"),
    (b"foo{bar}{zap}", b"bar"),
    (b"foo{}{bar}", b"foo{}{bar}"),  # first tag empty: whole key, not "bar"
    (b"foo{{bar}}zap", b"{bar"),
    (b"foo{bar}", b"bar"),
    (b"{user1000}.following", b"user1000"),
    (b"{user1000}.followers", b"user1000"),
    (b"{\x00}", b"\x00"),
    (b"\xff{\xfe}", b"\xfe"),
]


@pytest.mark.parametrize("key, hashed", HASH_TAG_CASES)
def test_hash_tags(key: bytes, hashed: bytes):
    assert key_slot(key) == binascii.crc_hqx(hashed, 0) % 16384


@pytest.mark.parametrize(
    "a, b",
    [
        (b"{user1000}.following", b"{user1000}.followers"),
        (b"foo{bar}{zap}", b"bar"),
        (b"{a}{b}", b"a"),
        (b"a}{b}", b"b"),
        (b"x{tag}", b"y{tag}z"),
    ],
)
def test_same_slot(a: bytes, b: bytes):
    assert key_slot(a) == key_slot(b)


def test_empty_tag_is_not_a_tag():
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")


key_strategy = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from([b"{", b"}", b"a", b"b", b"user", b"\x00", b"\xff", b"", b"{}"]),
        max_size=12,
    ).map(b"".join),
)


@PROPS
@given(key=key_strategy)
def test_key_slot_matches_oracle(key: bytes):
    slot = key_slot(key)
    assert 0 <= slot < SLOTS
    assert slot == oracle_slot(key)


@PROPS
@given(tag=st.binary(min_size=1).filter(lambda t: b"}" not in t), pre=st.binary(), post=st.binary())
def test_tag_decides_the_slot(tag: bytes, pre: bytes, post: bytes):
    pre = pre.replace(b"{", b"")
    assert key_slot(pre + b"{" + tag + b"}" + post) == binascii.crc_hqx(tag, 0) % 16384


@PROPS
@given(data=st.binary(max_size=512))
def test_crc16_matches_crc_hqx(data: bytes):
    assert crc16(data) == binascii.crc_hqx(data, 0)


@PROPS
@given(st.binary(max_size=64).filter(lambda k: b"{" not in k))
def test_inlined_slot_of_a_key_without_braces(key: bytes):
    # The data path computes this inline (rproxy/net/session.py) for keys without '{'.
    assert slots.CRC16(key, 0, slots.CRC16_TABLE) & 0x3FFF == key_slot(key)
