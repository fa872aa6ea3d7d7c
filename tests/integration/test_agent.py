"""vmdefrag-agent in a real guest, spoken to over the real virtio-serial port.

The host side here is a small protocol client written against
include/vmdefrag/proto.h (struct layouts repeated with `struct`, so a
change of the wire format breaks this test as it would break a daemon).

test_agent_session        no module needed: the agent finds its port
                          without udev, says HELLO (without
                          PROTO_FEAT_MODULE), answers requests with
                          -ENODEV, refuses malformed requests with the
                          codec's errno, ignores a corrupted stream until
                          the host reconnects, sends HELLO again after every
                          reconnect, and exits 0 on SIGTERM.
test_agent_relays_module  the agent started before vmdefrag.ko, which it
                          then finds: HELLO, SCAN, CAPTURE a few MiB, LIST,
                          the capture handshake (host captures are PENDING
                          until ACKed; a host disconnect or HELLO ACKs them
                          all; a LIST makes them PENDING again; a STRICT
                          capture stays inside the preferred ranges),
                          RELEASE by ranges and by bytes, a compact-mode
                          CAPTURE, the EVT_CAPTURED / EVT_RELEASED /
                          EVT_STATS events, a host reconnect, STATS and
                          SET_FLOOR, each checked against the others and
                          against the guest's own view (MemFree); then the
                          module is unloaded and loaded under the agent.
test_agent_log_priorities the agent's stderr as systemd gives it to a
                          service (JOURNAL_STREAM naming that stream): every
                          line is "<N>message", N the syslog priority the
                          guest's journal records; on a plain file the
                          lines are "vmdefrag-agent: [warning: ]message".
"""
import errno
import re
import struct
import time

import pytest

from harness.guest import Guest
from harness.unixsock import connect_unix
from harness.wire import (
    ACK_ALL, ACK_REQ_FMT, ACK_RESP_FMT, CAPTURE_REQ_FMT, CAPTURE_STRICT,
    EVT_CAPTURED, EVT_FMT, EVT_RELEASED, EVT_STATS, FEAT_EVENTS,
    FEAT_MODULE, F_MORE, HDR, HELLO, HELLO_FMT,
    LIST_RESP_FMT, MAGIC, RANGES_RESP_FMT, RANGE_FMT, RELEASE_REQUEST,
    RELEASE_REQ_FMT, REQ_ACK, REQ_CAPTURE, REQ_LIST, REQ_RELEASE,
    REQ_SCAN, REQ_SET_FLOOR, REQ_STATS, RESP, RESP_ERROR,
    SCAN_FMT, SLAB_FMT, STATS_FMT, STATUS_FMT)

MIB = 1 << 20
BLOCK = 2 * MIB



class ProtoClient:
    """The host end of the port: frames out, frames in, events kept aside.

    Like a daemon, it starts every connection with its HELLO (proto.h).
    """

    def __init__(self, path, timeout=60):
        self.sock = connect_unix(path, 10, interval=0.1)
        self.timeout = timeout
        self.buf = b""
        self.events = []
        self.hellos = []
        self.next_id = 1
        self.send_hello()

    def send_hello(self):
        self.send(HELLO, 0, HELLO_FMT.pack(1, 1, 0, 0, 0, 0, 0))

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, type_, id_, payload=b"", flags=0):
        self.send_raw(HDR.pack(MAGIC, 1, flags, type_, id_, len(payload)) + payload)

    def recv(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= HDR.size:
                magic, version, flags, type_, id_, length = HDR.unpack_from(self.buf)
                assert magic == MAGIC and version == 1, self.buf[:16]
                if len(self.buf) >= HDR.size + length:
                    payload = self.buf[HDR.size:HDR.size + length]
                    self.buf = self.buf[HDR.size + length:]
                    return type_, flags, id_, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the agent")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("agent side closed")
            self.buf += chunk

    def recv_frame(self, want_id, timeout=None):
        """Next response frame; events and HELLOs are kept aside."""
        while True:
            frame = self.recv(timeout)
            if frame[0] in (EVT_CAPTURED, EVT_RELEASED, EVT_STATS):
                self.events.append(frame)
                continue
            if frame[0] == HELLO:
                self.hellos.append(frame)
                continue
            assert frame[2] == want_id, frame
            return frame

    def hello(self, timeout=None):
        """The first frame of a connection is the guest's HELLO."""
        type_, flags, id_, payload = self.recv(timeout)
        assert (type_, flags, id_) == (HELLO, 0, 0)
        self.hellos.append((type_, flags, id_, payload))
        return HELLO_FMT.unpack(payload)

    def request(self, type_, payload=b"", timeout=None):
        """Send a request, return the list of its response frames (a run)."""
        id_ = self.next_id
        self.next_id += 1
        self.send(type_, id_, payload)
        frames = []
        while True:
            frame = self.recv_frame(id_, timeout)
            frames.append(frame)
            if not frame[1] & F_MORE:
                return frames


def status_of(payload):
    return STATUS_FMT.unpack_from(payload)[0]


def ranges_of(payload, offset, n):
    rs = [RANGE_FMT.unpack_from(payload, offset + i * RANGE_FMT.size) for i in range(n)]
    assert len(payload) == offset + n * RANGE_FMT.size
    for gpa, length in rs:
        assert gpa % BLOCK == 0 and length % BLOCK == 0 and length > 0
    return rs


def ranges_resp(frames, type_):
    """(status, stop_errno, bytes, ranges) of a CAPTURE/RELEASE response run."""
    out, total = [], None
    for t, _, _, payload in frames:
        assert t == type_
        status = status_of(payload)
        if status < 0:
            assert len(frames) == 1 and len(payload) == STATUS_FMT.size
            return status, 0, 0, []
        status, stop, nbytes, n, _ = RANGES_RESP_FMT.unpack_from(payload)
        total = nbytes
        out += ranges_of(payload, RANGES_RESP_FMT.size, n)
    return 0, stop, total, out


def list_resp(frames):
    out = []
    for t, _, _, payload in frames:
        assert t == RESP | REQ_LIST
        status, n = LIST_RESP_FMT.unpack_from(payload)
        assert status == 0, status
        out += ranges_of(payload, LIST_RESP_FMT.size, n)
    return out


def start_agent(g, args="-v --stats-interval 0"):
    g.check(f"vmdefrag-agent {args} >/tmp/agent.log 2>&1 &")


def agent_log(g):
    return g.check("cat /tmp/agent.log")


def stop_agent(g):
    """SIGTERM the agent; it must exit within 5 s and say so."""
    g.check("kill -TERM $(pidof vmdefrag-agent)")
    for _ in range(50):
        if g.run("pidof vmdefrag-agent")[0] != 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("agent still running 5 s after SIGTERM:\n" + agent_log(g))
    assert "exiting" in agent_log(g)


def test_agent_session(kernel):
    with Guest(kernel, ram_mib=512) as g:
        # the initramfs has no udev: the agent must find the port in sysfs
        assert g.run("test -e /dev/virtio-ports/org.vmdefrag.0")[0] != 0
        start_agent(g)
        c = ProtoClient(g.vdf_socket)
        try:
            vmin, vmax, _, features, page, block, ram = c.hello()
            # message sets 1 to 3 (2: the slab census, the eviction policy;
            # 3: EVT_MEMINFO, which this version-1 host never gets)
            assert (vmin, vmax) == (1, 3)
            assert features & FEAT_EVENTS and not features & FEAT_MODULE
            assert (page, block) == (4096, BLOCK)
            assert 400 * MIB < ram <= 512 * MIB

            # no module: every request fails with ENODEV, nothing crashes
            for req in (REQ_SCAN, REQ_LIST, REQ_STATS):
                [(t, flags, _, payload)] = c.request(req)
                assert (t, flags) == (RESP | req, 0)
                assert payload == STATUS_FMT.pack(-errno.ENODEV, 0)
            [(t, _, _, payload)] = c.request(REQ_ACK, ACK_REQ_FMT.pack(0, ACK_ALL, 0))
            assert (t, payload) == (RESP | REQ_ACK, STATUS_FMT.pack(-errno.ENODEV, 0))

            # malformed requests get the codec's errno back
            bad_capture = CAPTURE_REQ_FMT.pack(4 * MIB, 0, 0, 0, 1, 0) + \
                RANGE_FMT.pack(4096, BLOCK)
            [(t, _, _, payload)] = c.request(REQ_CAPTURE, bad_capture)
            assert (t, status_of(payload)) == (RESP | REQ_CAPTURE, -errno.EINVAL)
            overflow = CAPTURE_REQ_FMT.pack(4 * MIB, 0, 0, 0, 1, 0) + \
                RANGE_FMT.pack(0xFFFFFFFFFFE00000, 2 * BLOCK)
            [(t, _, _, payload)] = c.request(REQ_CAPTURE, overflow)
            assert status_of(payload) == -errno.EOVERFLOW
            [(t, _, _, payload)] = c.request(0x0777)
            assert (t, status_of(payload)) == (RESP_ERROR, -errno.EOPNOTSUPP)
            [(t, _, _, payload)] = c.request(REQ_SET_FLOOR, b"\0" * 4)
            assert status_of(payload) == -errno.EBADMSG
            # handshake frames: unknown flags, ACK of nothing, ALL with ranges
            strict_none = CAPTURE_REQ_FMT.pack(4 * MIB, 0, 0, 0, 0, CAPTURE_STRICT)
            unknown_flag = CAPTURE_REQ_FMT.pack(4 * MIB, 0, 0, 0, 0, 2)
            ack_nothing = ACK_REQ_FMT.pack(0, 0, 0)
            ack_all_ranges = ACK_REQ_FMT.pack(0, ACK_ALL, 1) + RANGE_FMT.pack(0, BLOCK)
            for req, body in ((REQ_CAPTURE, strict_none), (REQ_CAPTURE, unknown_flag),
                              (REQ_ACK, ack_nothing), (REQ_ACK, ack_all_ranges)):
                [(t, _, _, payload)] = c.request(req, body)
                assert (t, status_of(payload)) == (RESP | req, -errno.EINVAL), body

            # a request split into single bytes is reassembled
            frame = HDR.pack(MAGIC, 1, 0, REQ_STATS, 500, 0)
            for b in frame:
                c.send_raw(bytes([b]))
                time.sleep(0.01)
            assert c.recv_frame(500)[3] == STATUS_FMT.pack(-errno.ENODEV, 0)

            # a corrupt header kills the stream: requests go unanswered...
            c.send_raw(b"\xde\xad\xbe\xef" + b"\0" * 12)
            c.send(REQ_STATS, 501)
            with pytest.raises(TimeoutError):
                c.recv_frame(501, timeout=3)
            assert "corrupt frame header" in agent_log(g)
            # ...until a host HELLO starts a new session
            c.send(REQ_STATS, 502, b"junk after the corruption")
            c.send_hello()
            [(_, _, id_, payload)] = c.request(REQ_STATS)
            assert payload == STATUS_FMT.pack(-errno.ENODEV, 0)
            assert "new session" in agent_log(g)

            # corrupt again, then drop the connection
            c.send_raw(b"\0" * 64)
        finally:
            c.close()

        # reconnect at once, and after a pause: HELLO and a working session
        for pause in (0, 2, 0):
            time.sleep(pause)
            c = ProtoClient(g.vdf_socket)
            try:
                c.hello()
                [(t, _, _, payload)] = c.request(REQ_SCAN)
                assert status_of(payload) == -errno.ENODEV
            finally:
                c.close()
        assert "host disconnected" in agent_log(g)
        assert g.run("pidof vmdefrag-agent")[0] == 0
        stop_agent(g)

        # bad flags: one line, exit 2
        status, out = g.run("vmdefrag-agent --no-such-flag")
        assert status == 2 and len(out.strip().splitlines()) == 1, out


def module_or_skip(g):
    if g.run("test -f /lib/modules/vmdefrag.ko")[0] != 0:
        pytest.skip("vmdefrag.ko is not built for this kernel (make module)")


def wait_event(c, type_, timeout=30):
    """Read frames into c.events until one of type_ is among them."""
    deadline = time.monotonic() + timeout
    while not any(e[0] == type_ for e in c.events):
        frame = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        (c.hellos if frame[0] == HELLO else c.events).append(frame)
    return [e for e in c.events if e[0] == type_]


def wait_hello(c, module, timeout=30):
    """Skip frames until a guest HELLO whose FEAT_MODULE bit is `module`."""
    deadline = time.monotonic() + timeout
    while True:
        frame = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        if frame[0] != HELLO:
            c.events.append(frame)
            continue
        if bool(HELLO_FMT.unpack(frame[3])[3] & FEAT_MODULE) == module:
            return HELLO_FMT.unpack(frame[3])


def ack(c, ranges):
    """REQ_ACK of ranges: the bytes the guest moved from PENDING to HOST."""
    body = ACK_REQ_FMT.pack(0, 0, len(ranges)) + b"".join(RANGE_FMT.pack(*r) for r in ranges)
    [(t, flags, _, payload)] = c.request(REQ_ACK, body)
    assert (t, flags) == (RESP | REQ_ACK, 0), payload
    status, reserved, nbytes = ACK_RESP_FMT.unpack(payload)
    assert (status, reserved) == (0, 0), status
    return nbytes


def wait_hello_count(c, n, timeout=30):
    """Read frames until c has seen n HELLOs in all."""
    deadline = time.monotonic() + timeout
    while len(c.hellos) < n:
        frame = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        (c.hellos if frame[0] == HELLO else c.events).append(frame)


def memfree(g):
    for line in g.check("cat /proc/meminfo").splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemFree")


def test_agent_relays_module(kernel):
    with Guest(kernel, ram_mib=1024) as g:
        module_or_skip(g)
        # the agent starts first and waits for the module
        start_agent(g, "-v --stats-interval 1")
        c = ProtoClient(g.vdf_socket, timeout=300)
        try:
            assert not c.hello()[3] & FEAT_MODULE
            g.check("insmod /lib/modules/vmdefrag.ko")
            wait_hello(c, module=True)

            # SCAN: totals and histograms shaped as the header says
            [(t, _, _, payload)] = c.request(REQ_SCAN)
            assert t == RESP | REQ_SCAN and status_of(payload) == 0, payload[:8]
            scan = SCAN_FMT.unpack_from(payload)
            total, free = scan[2], scan[3]
            nclasses, ncost, nunmov = scan[9:12]
            assert scan[12] == 0
            nslabs = scan[13]
            classes = scan[14:30]
            bounds = scan[46:62]
            assert 512 * MIB < total <= 1024 * MIB and 0 < free < total
            assert (nclasses, ncost, nunmov) == (5, 6, 5)
            assert list(bounds[:6]) == [0, 16, 64, 128, 256, 512]
            assert sum(classes) * BLOCK >= total // 2
            assert len(payload) == SCAN_FMT.size + nslabs * SLAB_FMT.size
            for i in range(nslabs):
                name = SLAB_FMT.unpack_from(payload, SCAN_FMT.size + i * SLAB_FMT.size)[0]
                assert name.rstrip(b"\0") and name.rstrip(b"\0").isascii()

            # CAPTURE 8 MiB: ranges add up to the bytes; the guest loses them
            before = memfree(g)
            frames = c.request(REQ_CAPTURE, CAPTURE_REQ_FMT.pack(8 * MIB, 0, 0, 0, 0, 0))
            status, stop, captured, ranges = ranges_resp(frames, RESP | REQ_CAPTURE)
            assert status == 0 and captured >= 4 * MIB, (status, stop, captured)
            assert sum(length for _, length in ranges) == captured
            assert memfree(g) <= before - captured + 16 * MIB

            # the module's multicast event arrives as EVT_CAPTURED
            evt = wait_event(c, EVT_CAPTURED)
            evt_ranges = []
            for _, _, id_, payload in evt:
                reason, n = EVT_FMT.unpack_from(payload)
                assert (id_, reason) == (0, 0)
                evt_ranges += ranges_of(payload, EVT_FMT.size, n)
            assert sorted(evt_ranges) == sorted(ranges)

            # LIST shows exactly what was captured
            assert list_resp(c.request(REQ_LIST)) == sorted(ranges)

            # handshake: a host capture is PENDING until ACKed, once
            assert ack(c, ranges) == captured
            assert ack(c, ranges) == 0
            # LIST from the host makes every listed block PENDING again
            assert list_resp(c.request(REQ_LIST)) == sorted(ranges)
            assert ack(c, ranges) == captured
            assert list_resp(c.request(REQ_LIST)) == sorted(ranges)
        finally:
            c.close()

        # host reconnects: HELLO again, state intact; the disconnect
        # acknowledged every PENDING block (the LIST above left them so)
        c = ProtoClient(g.vdf_socket, timeout=300)
        try:
            assert c.hello()[3] & FEAT_MODULE
            assert ack(c, ranges) == 0
            # the agent may see the close, or only the new host's HELLO
            # (a quick reopen of the port can pass unseen): either ACKs all
            assert "acknowledged every pending block (" in agent_log(g)
            assert list_resp(c.request(REQ_LIST)) == sorted(ranges)
            assert ack(c, ranges) == captured
            # ACK ALL: nothing left pending after the one above
            [(t, _, _, payload)] = c.request(REQ_ACK, ACK_REQ_FMT.pack(0, ACK_ALL, 0))
            assert ACK_RESP_FMT.unpack(payload) == (0, 0, 0)
            # a host HELLO in mid-session is a new session: all acknowledged
            c.request(REQ_LIST)
            seen = len(c.hellos)
            c.send_hello()
            wait_hello_count(c, seen + 1)
            assert ack(c, ranges) == 0
            assert "host HELLO: acknowledged every pending block" in agent_log(g)

            [(t, _, _, payload)] = c.request(REQ_STATS)
            assert status_of(payload) == 0
            stats = STATS_FMT.unpack_from(payload, STATUS_FMT.size)
            assert stats[1] >= captured // BLOCK          # blocks_vacated
            assert stats[11] == captured                  # captured_bytes

            # RELEASE by ranges gives it all back
            body = RELEASE_REQ_FMT.pack(0, len(ranges), 0) + \
                b"".join(RANGE_FMT.pack(*r) for r in ranges)
            frames = c.request(REQ_RELEASE, body)
            status, _, released, rel = ranges_resp(frames, RESP | REQ_RELEASE)
            assert status == 0 and released == captured
            assert sorted(rel) == sorted(ranges)
            assert list_resp(c.request(REQ_LIST)) == []
            _, _, _, payload = wait_event(c, EVT_RELEASED)[0]
            assert EVT_FMT.unpack_from(payload)[0] == RELEASE_REQUEST

            # STRICT: only the preferred ranges are emptied, even when they
            # cannot give all that was asked
            preferred = sorted(ranges)[:1]
            body = CAPTURE_REQ_FMT.pack(64 * MIB, 0, 0, 0, 1, CAPTURE_STRICT) + \
                RANGE_FMT.pack(*preferred[0])
            status, _, strict_bytes, strict = ranges_resp(c.request(REQ_CAPTURE, body),
                                                          RESP | REQ_CAPTURE)
            assert status == 0 and 0 < strict_bytes <= preferred[0][1], strict
            for gpa, length in strict:
                assert preferred[0][0] <= gpa and gpa + length <= sum(preferred[0])
            c.request(REQ_RELEASE, RELEASE_REQ_FMT.pack(strict_bytes, 0, 0))

            # RELEASE by bytes, after a second capture
            frames = c.request(REQ_CAPTURE, CAPTURE_REQ_FMT.pack(4 * MIB, 0, 0, 0, 0, 0))
            status, _, again, ranges2 = ranges_resp(frames, RESP | REQ_CAPTURE)
            assert status == 0 and again >= BLOCK
            frames = c.request(REQ_RELEASE, RELEASE_REQ_FMT.pack(again, 0, 0))
            status, _, released, rel = ranges_resp(frames, RESP | REQ_RELEASE)
            assert (status, released, sorted(rel)) == (0, again, sorted(ranges2))

            # compact mode empties blocks for the guest's own allocator:
            # nothing stays captured
            frames = c.request(REQ_CAPTURE, CAPTURE_REQ_FMT.pack(4 * MIB, 1, 0, 0, 0, 0))
            status, _, compacted, _ = ranges_resp(frames, RESP | REQ_CAPTURE)
            assert status == 0
            assert list_resp(c.request(REQ_LIST)) == []

            [(t, _, _, payload)] = c.request(REQ_SET_FLOOR, struct.pack("<Q", 64 * MIB))
            assert (t, payload) == (RESP | REQ_SET_FLOOR, STATUS_FMT.pack(0, 0))
            [(t, _, _, payload)] = c.request(REQ_STATS)
            assert STATS_FMT.unpack_from(payload, STATUS_FMT.size)[12] == 64 * MIB

            # periodic statistics arrived on their own, as EVT_STATS
            periodic = wait_event(c, EVT_STATS, timeout=10)
            for _, flags, id_, payload in periodic:
                assert (flags, id_, len(payload)) == (0, 0, STATS_FMT.size)
                assert STATS_FMT.unpack(payload)[0] > 0       # blocks_scanned

            # the module goes away under the agent, and comes back
            g.check("rmmod vmdefrag")
            [(t, _, _, payload)] = c.request(REQ_SCAN)
            assert t == RESP | REQ_SCAN and status_of(payload) < 0
            [(t, _, _, payload)] = c.request(REQ_SCAN)
            assert status_of(payload) == -errno.ENODEV
            g.check("insmod /lib/modules/vmdefrag.ko")
            wait_hello(c, module=True)
            [(t, _, _, payload)] = c.request(REQ_SCAN)
            assert status_of(payload) == 0
        finally:
            c.close()
        stop_agent(g)
        g.check("rmmod vmdefrag")


def test_agent_log_priorities(agent_kernel):
    with Guest(agent_kernel, ram_mib=512) as g:
        g.check(": >/tmp/j.log; JOURNAL_STREAM=$(stat -c %d:%i /tmp/j.log) "
                "vmdefrag-agent -v --stats-interval 0 </dev/null >/dev/null "
                "2>>/tmp/j.log &")
        for _ in range(100):
            if "opened port" in g.check("cat /tmp/j.log"):
                break
            time.sleep(0.1)
        # a second one, on a plain file, fails: the port is the first one's
        start_agent(g)
        c = ProtoClient(g.vdf_socket)
        try:
            c.hello()
        finally:
            c.close()
        time.sleep(1)
        g.check("kill -TERM $(pidof vmdefrag-agent) 2>/dev/null; sleep 1")
        journal = g.check("cat /tmp/j.log").splitlines()
        plain = agent_log(g).splitlines()
    assert journal and plain
    assert all(re.match(r"<[3-7]>[^<]", ln) for ln in journal), journal
    assert "<6>host HELLO: protocol version 1" in journal, journal
    assert any(ln.startswith("<4>generic netlink family") for ln in journal), journal
    assert any(re.match(r"<6>received .*, exiting$", ln) for ln in journal), journal
    assert plain == ['vmdefrag-agent: cannot open port "/dev/vport0p2": Device or '
                     'resource busy'], plain
    assert not any(re.match(r"<\d>", ln) for ln in plain), plain
