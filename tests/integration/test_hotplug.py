"""Memory hot-plug under a running vmdefragd, on a real guest.

test_dimm_hotplug, on the first guest kernel: a 512 MiB guest with two
DIMM slots (harness Guest(maxmem_mib=...)), the module and the agent in it
and memcheck data.  Its RAM is a shared memfd, and so is the DIMM's.
  plug      a 256 MiB pc-dimm on a memory-backend-memfd (QMP object-add and
            device_add, on the harness's own monitor); the guest kernel
            onlines it (memhp_default_state=online_movable); the daemon
            rediscovers the layout (QEMU 7.2 sends no DEVICE_ADDED; the
            guest's ACPI_DEVICE_OST or its first range there makes it ask):
            status says 768 MiB, and says so within seconds
  reclaim   the guest writes 200 MiB (its movable zone, the DIMM, first) and
            frees it, so the DIMM's memfd holds data the guest no longer
            needs; a reclaim of 160 MiB: the guest captures
            blocks in the DIMM (its `vdfnl list` names ranges at the DIMM's
            address from query-memory-devices), at least 64 MiB, the
            session is never dropped as hostile, and the DIMM's memfd lost
            at least as much memory (st_blocks, measured here)
  return    all of it comes back: nothing captured, the DIMM's memfd backed
            again; memcheck verifies
"""
import os
import time

from harness.guest import Guest
from harness.hostmem import ram_backing_fds
from harness.vmdefragd import Daemon, start_agent

MIB = 1 << 20
BLOCK = 2 * MIB
RAM_MIB, DIMM_MIB = 512, 256


def allocated(path):
    """Bytes of shmem file `path` with memory behind them (st_blocks: a
    fallocated page counts, a punched one does not)."""
    return os.stat(path).st_blocks * 512


def test_dimm_hotplug(agent_kernel, workdir, figures):
    qmp2 = workdir / "daemon.qmp"
    config = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
    with Guest(agent_kernel, ram_mib=RAM_MIB, fpr=False, maxmem_mib=RAM_MIB + DIMM_MIB,
               cmdline="memhp_default_state=online_movable",
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        start_agent(g, floor_mb=32)
        g.check("memcheck start --mib 64 --id a --seed 3", timeout=300)
        d = Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=config)
        try:
            d.wait_reconciled("g")
            assert d.status("g")["g"]["ram_bytes"] == RAM_MIB * MIB

            # ---- plug ------------------------------------------------------
            total0 = g.meminfo()["MemTotal"]
            g.qmp("object-add", **{"qom-type": "memory-backend-memfd", "id": "hp0",
                                   "size": DIMM_MIB * MIB, "share": True})
            g.qmp("device_add", driver="pc-dimm", id="dimm0", memdev="hp0")
            t0 = time.monotonic()
            dimms = [m["data"] for m in g.qmp("query-memory-devices")
                     if m["data"].get("id") == "dimm0"]
            assert len(dimms) == 1, dimms
            base = dimms[0]["addr"]
            deadline = time.monotonic() + 120
            while g.meminfo()["MemTotal"] < total0 + (DIMM_MIB - 8) * MIB:
                assert time.monotonic() < deadline, (total0, g.meminfo()["MemTotal"])
                time.sleep(0.5)
            d.wait_for(lambda: d.status("g")["g"]["ram_bytes"] ==
                       (RAM_MIB + DIMM_MIB) * MIB, "the daemon to see the DIMM", 60)
            figures("DIMM plugged until the daemon's layout has it",
                    time.monotonic() - t0, "s")
            assert "RAM layout changed (memory hot-plug): 768 MiB" in d.text()

            # ---- reclaim into the DIMM ------------------------------------
            fds = ram_backing_fds(g.pid, DIMM_MIB * MIB)
            assert len(fds) == 1, fds
            dimm_path = fds[0][0]
            # the guest writes most of the DIMM (user memory goes to its
            # movable zone first), then frees it: free guest memory that
            # the host backs, what a reclaim takes
            a0 = allocated(dimm_path)
            g.check("memcheck start --mib 200 --id b --seed 4", timeout=300)
            g.check("memcheck stop --id b", timeout=300)
            backed = allocated(dimm_path)
            figures("DIMM backed after the guest used it", backed / MIB, "MiB")
            assert backed >= a0 + 64 * MIB, (a0, backed)
            drops0 = d.status("g")["g"]["session"]["drops"]
            # 160 MiB: less than the DIMM's 200 MiB written and freed, well
            # above the guest's floor
            p = d.ctl("reclaim", "g", "160M", "--wait", check=False)
            assert p.returncode == 0, (p.stdout, p.stderr, d.text()[-3000:])
            in_dimm = set()
            for addr, length in g.captured_ranges():
                for b in range(addr, addr + length, BLOCK):
                    if base <= b < base + DIMM_MIB * MIB:
                        in_dimm.add(b - base)
            taken = backed - allocated(dimm_path)
            figures("reclaimed from the DIMM (captured there)", len(in_dimm) * 2, "MiB")
            figures("reclaimed from the DIMM (its memfd's drop)", taken / MIB, "MiB")
            assert len(in_dimm) * BLOCK >= 64 * MIB, (len(in_dimm), g.captured_ranges())
            # what the guest captured in the DIMM is gone from its memfd (less
            # a few pages the guest wrote elsewhere in it meanwhile)
            assert taken >= len(in_dimm) * BLOCK - 2 * MIB, (taken, len(in_dimm))
            st = d.status("g")["g"]
            assert st["session"]["drops"] == drops0, st["session"]
            assert st["session"]["state"] == "ready", st["session"]

            # ---- return ----------------------------------------------------
            held = sum(length for _, length in g.captured_ranges())
            p = d.ctl("return", "g", f"{held // MIB}M", "--wait", check=False)
            assert p.returncode == 0, (p.stdout, p.stderr, d.text()[-3000:])
            assert not g.captured_ranges()
            assert allocated(dimm_path) >= backed - 8 * MIB, (backed, allocated(dimm_path))
            g.check("memcheck verify --id a", timeout=300)
            assert d.status("g")["g"]["session"]["drops"] == drops0
            assert d.alive()
        finally:
            rc = d.close()
        assert rc == 0, d.text()[-3000:]
