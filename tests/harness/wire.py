"""The host <-> guest protocol (include/vmdefrag/proto.h), for tests.

Tests that play the host (against a real agent) or the guest (against a
real daemon) build and parse frames with these: the header, the message
types and features, and the little-endian layout of each payload.  They
mirror proto.h by hand; proto.h's _Static_asserts pin the sizes, and
struct sizes are checked below against the same numbers.
"""
import struct

HDR = struct.Struct("<IBBHII")          # magic version flags type id len
MAGIC = 0x50464456                      # "VDFP"
F_MORE = 0x01

HELLO = 0x0001
REQ_SCAN, REQ_CAPTURE, REQ_RELEASE, REQ_LIST, REQ_STATS, REQ_SET_FLOOR, REQ_ACK = \
    range(0x10, 0x17)
EVT_CAPTURED, EVT_RELEASED, EVT_STATS = 0x20, 0x21, 0x22
RESP = 0x8000
RESP_ERROR = RESP

FEAT_EVENTS, FEAT_STATS_EVT, FEAT_MODULE = 1, 2, 4
RELEASE_REQUEST = 0
CAPTURE_STRICT, ACK_ALL = 1, 1

HELLO_FMT = struct.Struct("<HHIQIIQ")
STATUS_FMT = struct.Struct("<iI")
SCAN_FMT = struct.Struct("<iI7QBBBBI16Q16Q16I16Q")
SLAB_FMT = struct.Struct("<32sQQ")
CAPTURE_REQ_FMT = struct.Struct("<QIIQII")    # bytes mode budget floor nranges flags
RANGES_RESP_FMT = struct.Struct("<iiQII")     # status stop_errno bytes nranges reserved
RELEASE_REQ_FMT = struct.Struct("<QII")
LIST_RESP_FMT = struct.Struct("<iI")
STATS_FMT = struct.Struct("<13Q")
EVT_FMT = struct.Struct("<II")
RANGE_FMT = struct.Struct("<QQ")
ACK_REQ_FMT = struct.Struct("<QII")
ACK_RESP_FMT = struct.Struct("<iIQ")

# the sizes proto.h asserts
assert (HDR.size, HELLO_FMT.size, STATUS_FMT.size, SLAB_FMT.size, CAPTURE_REQ_FMT.size,
        RANGES_RESP_FMT.size, RELEASE_REQ_FMT.size, LIST_RESP_FMT.size, STATS_FMT.size,
        EVT_FMT.size, RANGE_FMT.size, ACK_REQ_FMT.size, ACK_RESP_FMT.size) == \
    (16, 32, 8, 48, 32, 24, 16, 8, 104, 8, 16, 16, 16)
assert SCAN_FMT.size == 72 + 3 * 8 * 16 + 4 * 16


def frame(type_, id_=0, payload=b"", flags=0):
    return HDR.pack(MAGIC, 1, flags, type_, id_, len(payload)) + payload
