"""What an operator sees: metrics, history and the block map, on a real guest.

One guest boot (a module-scoped fixture) serves every guest-facing check,
in order: a map before anything was reclaimed, a reclaim and a return made
by a person (vmdefragctl), the metrics (vmdefragctl metrics, the HTTP
listener, the node_exporter textfile) read with the Debian-packaged
Prometheus client's parser and compared with status and with the backing
the harness measures itself, the history, a map after the reclaim drawn as
SVG (well-formed XML, per-kind totals that agree with the daemon's answer
and with a scan, a headless Chromium screenshot that is not blank), and a
daemon restart that keeps the counters and the history.  The listener's
refusals (junk, other paths and methods, an oversized request, too many
clients) and a non-loopback metrics_listen need no guest.
"""
import json
import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from harness.guest import BUILD, Guest, guest_kernels
from harness.vmdefragd import VMDEFRAGD, Daemon, check_json_units

prom_parser = pytest.importorskip("prometheus_client.parser")

MIB = 1 << 20
BLOCK = 2 * MIB
RAM_MIB = 512
SVG_NS = "{http://www.w3.org/2000/svg}"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def families(text):
    """{name: {labels-tuple: value}} from the Prometheus parser."""
    out = {}
    for fam in prom_parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def vm_value(f, name, vm="g", **labels):
    return f[name][tuple(sorted({"vm": vm, **labels}.items()))]


def http(port, raw, timeout=10):
    """Sends raw bytes, returns everything the listener answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def config(port, textfile):
    return (f"[daemon]\nmetrics_listen = tcp:127.0.0.1:{port}\n"
            f"metrics_textfile = {textfile}\nmetrics_textfile_interval_ms = 1000\n")


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    kernel = guest_kernels()[0]
    if not (BUILD / "agent/vmdefrag-agent").exists() or \
            not (BUILD / "module" / kernel / "vmdefrag.ko").exists():
        pytest.skip("needs build/agent/vmdefrag-agent and the module for " + kernel)
    e = Env()
    e.workdir = tmp_path_factory.mktemp("observe")
    e.qmp = e.workdir / "daemon.qmp"
    e.port = free_port()
    e.textfile = e.workdir / "vmdefrag.prom"
    with Guest(kernel, ram_mib=RAM_MIB,
               extra_args=["-qmp", f"unix:{e.qmp},server=on,wait=off"]) as g:
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        # data to keep intact, and free memory the backing holds, scattered
        # among slab and page cache (what a reclaim and the map are about)
        g.check("memcheck start --mib 96 --id a --seed 5", timeout=300)
        g.check("fragment --seed 7 --files 40 --anon 60 --slab 4000", timeout=600)
        g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
        e.g = g
        e.d = Daemon(e.workdir, [("g", e.qmp, g.vdf_socket)],
                     config=config(e.port, e.textfile))
        try:
            e.d.wait_reconciled("g")
            e.d.wait_for(lambda: "map" in e.d.status()["g"]["session"]["features"],
                         "the agent's HELLO with the map feature", timeout=60)
            yield e
        finally:
            e.d.close()
            g.run("kill $(pidof vmdefrag-agent)")


def module_work(g):
    """(pages_migrated, vacate_ns) of the guest module, from vdfnl stats."""
    st = dict(line.split("=", 1) for line in g.check("vdfnl stats").splitlines()
              if "=" in line)
    return int(st["pages_migrated"]), int(st["vacate_ns"])


def draw(e, name):
    """vmdefragctl map g --svg, the answer and the SVG's tree."""
    path = e.workdir / f"{name}.svg"
    answer = json.loads(e.d.ctl("map", "g", "--svg", str(path), "--json").stdout)
    check_json_units(answer)
    return answer["map"], path, ET.parse(path)


def svg_totals(tree):
    return {t.get("data-kind"): int(t.get("data-blocks"))
            for t in tree.getroot().iter(SVG_NS + "text") if t.get("data-kind")}


def map_kinds(m):
    """The kind of every block, as the SVG legend counts them."""
    host = [int(c, 16) for c in m["host"]]
    counts = {}
    for gch, h in zip(m["guest"], host):
        if h & 4:
            k = "reclaimed"
        elif h & 2 or gch == "C":
            k = "captured"
        else:
            k = {"F": "free", "M": "movable", "S": "slab", "E": "slab",
                 "O": "offline"}.get(gch, "unmovable")
        counts[k] = counts.get(k, 0) + 1
    counts["huge"] = sum(1 for h in host if h & 8)
    return counts


def test_map_before(env):
    m, path, tree = draw(env, "before")
    assert len(m["guest"]) == len(m["host"])
    assert len(m["guest"]) * BLOCK >= env.g.ram_bytes
    totals = svg_totals(tree)
    kinds = map_kinds(m)
    for k, n in totals.items():
        assert n == kinds.get(k, 0), (k, totals, kinds)
    rects = [r for r in tree.getroot().iter(SVG_NS + "rect") if r.get("class")]
    assert len(rects) == len(m["guest"])
    assert all(r.find(SVG_NS + "title") is not None for r in rects)
    # the guest's classes agree with a scan (a fresh one: the idle guest
    # moves a few blocks between the two)
    scan = json.loads(env.d.ctl("scan", "g", "--json").stdout)["scan"]
    by_class = {c["class"]: c["blocks"] for c in scan["classes"]}
    guest = m["guest"]
    got = {"free": guest.count("F"), "movable": guest.count("M"),
           "unmovable": sum(guest.count(c) for c in "SPRNUE"),
           "captured": guest.count("C")}
    for cls, n in got.items():
        assert abs(n - by_class.get(cls, 0)) <= max(4, by_class.get(cls, 0) // 20), \
            (cls, got, by_class)
    assert totals["free"] > 0 and totals["reclaimed"] == 0
    # slab blocks name their cache in their title
    slab_titles = [r.find(SVG_NS + "title").text for r in rects if r.get("class") == "slab"]
    if m["slabs"]:
        assert any("slab cache '" in t for t in slab_titles), slab_titles[:5]


def test_reclaim_return_counted(env):
    d, g = env.d, env.g
    w0 = module_work(g)
    rec = json.loads(d.ctl("reclaim", "g", "64M", "--wait", "--json").stdout)["operation"]
    w1 = module_work(g)
    assert rec["state"] == "done" and rec["origin"] == "user", rec
    # the reclaim's work is the growth of the module's own counters (the
    # daemon's manual VM runs nothing else that vacates meanwhile)
    assert rec["vacate_ns"] > 0, rec
    assert rec["pages_migrated"] == w1[0] - w0[0], (rec, w0, w1)
    assert rec["vacate_ns"] == w1[1] - w0[1], (rec, w0, w1)
    ret = json.loads(d.ctl("return", "g", "32M", "--wait", "--json").stdout)["operation"]
    assert ret["state"] == "done" and ret["origin"] == "user", ret
    # a return moves nothing in the guest: its work is not measured
    assert ret["pages_migrated"] is None and ret["vacate_ns"] is None, ret
    env.rec, env.ret = rec, ret

    text = d.ctl("metrics").stdout
    f = families(text)
    assert vm_value(f, "vmdefrag_reclaimed_bytes_total") == rec["done_bytes"]
    assert vm_value(f, "vmdefrag_returned_bytes_total") == ret["done_bytes"]
    assert vm_value(f, "vmdefrag_operations_total", kind="reclaim", result="done") == 1
    assert vm_value(f, "vmdefrag_operations_total", kind="return", result="done") == 1
    assert vm_value(f, "vmdefrag_operations_total", kind="reclaim", result="failed") == 0
    assert vm_value(f, "vmdefrag_session_up") == 1
    assert vm_value(f, "vmdefrag_policy_auto") == 0
    assert vm_value(f, "vmdefrag_policy_misses_total") == 0
    assert f["vmdefrag_sessions_up"][()] == 1 and f["vmdefrag_vms"][()] == 1
    assert list(f["vmdefrag_build_info"].values()) == [1]
    assert vm_value(f, "vmdefrag_vacate_seconds_total") >= 0
    st = d.status("g")["g"]
    measured = g.backing_bytes()
    assert abs(vm_value(f, "vmdefrag_backing_bytes") - measured) <= 4 * MIB, \
        (vm_value(f, "vmdefrag_backing_bytes"), measured)
    assert vm_value(f, "vmdefrag_captured_reclaimed_bytes") == st["memory"]["reclaimed_bytes"]
    assert vm_value(f, "vmdefrag_captured_bytes") == st["memory"]["captured_bytes"]
    assert vm_value(f, "vmdefrag_ram_bytes") == st["ram_bytes"]
    assert vm_value(f, "vmdefrag_huge_mapped_bytes") == st["huge_mapped_bytes"]
    # HELP and TYPE for every family, counters end in _total
    for fam in prom_parser.text_string_to_metric_families(text):
        assert fam.documentation, fam.name
        assert f"# TYPE {fam.name}" in text
        if fam.type == "counter":
            assert f"# TYPE {fam.name}_total counter" in text


def test_history(env):
    d = env.d
    h = json.loads(d.ctl("history", "g", "--json").stdout)
    check_json_units(h)
    ops = [o for o in h["history"] if o["kind"] in ("reclaim", "return")]
    assert [(o["kind"], o["origin"], o["state"]) for o in ops] == \
        [("reclaim", "user", "done"), ("return", "user", "done")], h
    assert ops[0]["id"] == env.rec["id"] and ops[1]["id"] == env.ret["id"]
    assert ops[0]["done_bytes"] == env.rec["done_bytes"]
    assert (ops[0]["pages_migrated"], ops[0]["vacate_ns"]) == \
        (env.rec["pages_migrated"], env.rec["vacate_ns"]), (ops[0], env.rec)
    assert ops[1]["pages_migrated"] is None, ops[1]
    assert ops[0]["target_bytes"] == 64 * MIB
    assert abs(ops[0]["started_unix_ms"] / 1000 - time.time()) < 3600
    human = d.ctl("history").stdout
    assert "reclaim" in human and "user" in human and "MiB/s" in human, human
    # the reclaim's line shows its pages and guest CPU, the return's "-"
    line = [ln for ln in human.splitlines() if f" {env.rec['id']}  reclaim " in ln]
    assert line and f" {env.rec['pages_migrated']} " in line[0], (line, human)
    assert f"{env.rec['vacate_ns'] / 1e9:.2f} s" in line[0], (line, human)


def test_http_listener(env):
    port = env.port
    ok = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    assert b"text/plain; version=0.0.4" in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
    f = families(body.decode())
    assert vm_value(f, "vmdefrag_reclaimed_bytes_total") == env.rec["done_bytes"]
    assert http(port, b"GET /other HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert http(port, b"POST /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 405")
    assert http(port, b"\x00\x01junk\r\n\r\n").startswith(b"HTTP/1.0 400")
    assert http(port, b"hello there\n\n").startswith(b"HTTP/1.0 400")
    assert http(port, b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 8000 +
                b"\r\n\r\n").startswith(b"HTTP/1.0 400")
    # a silent client is closed after the idle timeout
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 3 < time.monotonic() - t0 < 12
    # at most 8 at once: the ninth is closed at once, the first 8 still work
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert extra.recv(10) == b""
        conns[0].sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert conns[0].recv(12).startswith(b"HTTP/1.0 200")
    finally:
        for c in conns:
            c.close()
    # the textfile: rewritten, parseable, never left half-written
    before = env.textfile.stat().st_mtime_ns
    env.d.wait_for(lambda: env.textfile.stat().st_mtime_ns != before,
                   "the textfile to be rewritten", timeout=10)
    f = families(env.textfile.read_text())
    assert vm_value(f, "vmdefrag_returned_bytes_total") == env.ret["done_bytes"]
    assert not any(p.name.endswith(".tmp") for p in env.workdir.iterdir())
    assert env.d.alive()


def test_map_after(env):
    m, path, tree = draw(env, "after")
    totals = svg_totals(tree)
    st = env.d.status("g")["g"]
    # what the host holds reclaimed is what the map draws as reclaimed
    assert totals["reclaimed"] * BLOCK == st["memory"]["reclaimed_bytes"] > 0, (totals, st)
    assert totals == {k: map_kinds(m).get(k, 0) for k in totals}
    png = env.workdir / "after-rsvg.png"
    env.d.ctl("map", "g", "--png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a real browser renders it: a screenshot with the grid's colours
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (make deps)")
    from PIL import Image
    shot = env.workdir / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--user-data-dir={env.workdir / 'chromium'}",
                    f"--screenshot={shot}", "--window-size=900,900",
                    path.as_uri()], check=True, capture_output=True, timeout=180)
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    big = [c for n, c in colours if n > 200]
    assert len(big) >= 5, f"screenshot looks blank: {sorted(colours)[-8:]}"
    for kind in ("free", "reclaimed"):
        want = {"free": (0x7b, 0xd3, 0x89), "reclaimed": (0xff, 0xff, 0xff)}[kind]
        assert any(all(abs(a - b) <= 8 for a, b in zip(c, want)) for c in big), kind
    # keep the pictures for a person to look at
    out = os.environ.get("VMDEFRAG_MAP_OUT")
    if out:
        for p in ("before.svg", "after.svg", "shot.png"):
            shutil.copy(env.workdir / p, out)


def test_restart_keeps_counters_and_history(env):
    d = env.d
    assert d.close() == 0, d.text()[-2000:]
    env.d = d = Daemon(env.workdir, [("g", env.qmp, env.g.vdf_socket)],
                       config=config(env.port, env.textfile))
    f = families(d.ctl("metrics").stdout)
    assert vm_value(f, "vmdefrag_reclaimed_bytes_total") == env.rec["done_bytes"]
    assert vm_value(f, "vmdefrag_returned_bytes_total") == env.ret["done_bytes"]
    assert vm_value(f, "vmdefrag_operations_total", kind="reclaim", result="done") == 1
    h = json.loads(d.ctl("history", "g", "--json").stdout)["history"]
    assert [o["id"] for o in h if o["kind"] in ("reclaim", "return")] == \
        [env.rec["id"], env.ret["id"]]
    # the work survives the restart with the rest of the history
    rec = [o for o in h if o["id"] == env.rec["id"]][0]
    assert (rec["pages_migrated"], rec["vacate_ns"]) == \
        (env.rec["pages_migrated"], env.rec["vacate_ns"]), (rec, env.rec)
    d.wait_reconciled("g")
    assert "corrupt" not in d.text()


def test_guest_data_intact(env):
    env.g.check("memcheck verify --id a")


def test_metrics_listen_refused(workdir):
    """A non-loopback metrics_listen is a one-line config error."""
    for spec in ("tcp:0.0.0.0:9100", "tcp:192.168.1.1:9100", "tcp:[::]:9100",
                 "tcp:localhost:9100", "udp:127.0.0.1:9100"):
        cfg = workdir / "bad.conf"
        cfg.write_text(f"[daemon]\nmetrics_listen = {spec}\n")
        p = subprocess.run([str(VMDEFRAGD), "--foreground", "--config", str(cfg),
                            "--socket", str(workdir / "s.sock"),
                            "--vm", f"a,qmp={workdir}/q,channel={workdir}/c"],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (spec, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "metrics_listen" in lines[0] and \
            f"{cfg}:2:" in lines[0], (spec, p.stderr)
