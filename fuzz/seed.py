#!/usr/bin/env python3
"""Writes the fuzz corpora's seeds from the golden vectors (tests/vectors).

Each seed is a vector's bytes behind the small header its target reads
(see the comments at the top of fuzz_targets/*.rs). Seeds are regenerated on
every run, under fixed names, into fuzz/corpus/<target>/, which also keeps
what libFuzzer finds; nothing here is committed.

usage: seed.py VECTORS_DIR CORPUS_DIR MAX_LEN
"""

import glob
import hashlib
import json
import os
import sys

# frame_decoder: max_frame 0x1ffff % 2^17 + 1 = 2^17 (LE, 3 bytes), then
# the number of read lengths (n % 8 + 1) and the lengths (0 = all left).
FRAME_MAX = bytes([0xFF, 0xFF, 0x01])
READS = [bytes([0x00, 0x00]), bytes([0x01, 0x01]), bytes([0x02, 7, 1, 200])]


def frame_seed(reads: bytes, stream: bytes) -> bytes:
    return FRAME_MAX + reads + stream


def head(buf: bytes, at: int) -> tuple[int, int]:
    """The CBOR head at `at`: (argument, its length)."""
    info = buf[at] & 0x1F
    if info < 24:
        return info, 1
    n = 1 << (info - 24)
    return int.from_bytes(buf[at + 1 : at + 1 + n], "big"), 1 + n


def frame_body(frame: bytes) -> bytes:
    """The body of a non-FINISH frame: after marker, K, packet, opaque heads."""
    at = 4
    _, n = head(frame, at)  # packet
    at += n
    _, n = head(frame, at)  # opaque
    at += n
    length, n = head(frame, at)  # body
    at += n
    return frame[at : at + length]


def body_seed(kind: int, body: bytes, prewrap: int = 0) -> bytes:
    # kind (and round-trip encodings), opaque choice 1000 and pre-wrap
    # encodings, max_frame extra 0xffff (room for the 70000-byte vectors),
    # one read of everything.
    return bytes([kind, 0x01 | prewrap << 3, 0xFF, 0xFF, 0x00]) + body


def main() -> None:
    vectors, corpus, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seeds: dict[str, list[bytes]] = {"frame_decoder": [], "body_decoder": []}
    frames = json.load(open(os.path.join(vectors, "frames.json")))
    for i, v in enumerate(frames):
        frame = bytes.fromhex(v["frame_hex"])
        seeds["frame_decoder"].append(frame_seed(READS[i % 3], frame))
        if v["kind"] != "finish":
            body = frame_body(frame)
            seeds["body_decoder"].append(body_seed(i % 20, body))
            if not v.get("tags"):
                # Also inside layers of our own gzip/lzw (1..4: see STACKS).
                seeds["body_decoder"].append(body_seed(i % 20, body, i % 4 + 1))
    # Each side's writes in a conversation, as one stream.
    for path in sorted(glob.glob(os.path.join(vectors, "conversation-*.json"))):
        events = json.load(open(path))["events"]
        for side in ("client->server", "server->client"):
            stream = b"".join(bytes.fromhex(e["hex"]) for e in events if e["dir"] == side)
            for reads in READS:
                seeds["frame_decoder"].append(frame_seed(reads, stream))
    for target, items in seeds.items():
        out = os.path.join(corpus, target)
        os.makedirs(out, exist_ok=True)
        kept = 0
        for seed in items:
            # Longer ones (the 70000-byte plain frames) would only be cut
            # to max_len; the 300-byte frames have the same shape.
            if len(seed) > max_len:
                continue
            name = "seed-" + hashlib.sha1(seed).hexdigest()[:16]
            with open(os.path.join(out, name), "wb") as f:
                f.write(seed)
            kept += 1
        print(f"{target}: {kept} seeds in {out}")


if __name__ == "__main__":
    main()
