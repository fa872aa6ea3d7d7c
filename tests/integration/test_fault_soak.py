"""The fault-injection soak (tests/soak/fault_soak.py), short: three cycles.

One 512 MiB guest (the first guest kernel, memfd RAM, shared backend), 96
MiB of memcheck data, reclaim / return / pressure cycles, one fault each,
one of every kind:

  daemon@before-punch     vmdefragd killed -9 while the guest captures
                          for a reclaim (nothing punched yet): the new
                          daemon's reconcile must punch what the guest holds
  qmp@during-punch        the daemon's QMP connection cut once the reclaim
                          punched (the backing's layout goes away under it)
  agent@during-pressure   the agent killed -9 while the guest gives blocks
                          back under pressure: the releases go to nobody,
                          the daemon must notice (the agent's STATS) and
                          reconcile

Every cycle must pass the soak's checks: every page of memcheck data, the
daemon's captured and reclaimed bytes equal to the guest's list, every
captured block a hole in the backing and every hole captured (see the
soak's docstring).  `make soak ITER=N` runs the long, drawn version.
"""
from harness.guest import BUILD
from soak.fault_soak import KINDS, Soak

PLAN = [("daemon", "before-punch"), ("qmp", "during-punch"),
        ("agent", "during-pressure")]


def test_fault_soak(agent_kernel, workdir, figures):
    assert (BUILD / "guest/memcheck").exists(), "needs build/guest/memcheck (make all)"
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    soak = Soak(seed=14, kernel=agent_kernel, plan=PLAN, workdir=workdir, out=out)
    ok = soak.run()
    t = soak.totals
    for it in soak.results:
        figures(f"cycle {it.n} {it.kind}@{it.point}", f"at {it.at}, {it.pages} pages, "
                f"captured {it.captured and it.captured >> 20} MiB", "")
    text = "\n".join(lines)
    assert [(it.kind, it.point) for it in soak.results] == PLAN, text
    assert all(it.injected for it in soak.results), text
    assert t["kinds"] == {k: 1 for k in KINDS}, text
    assert t["bad_pages"] == 0, text
    assert t["mismatches"] == 0, text
    # memcheck "a" (96 MiB) and the cycle's pressure allocation, every cycle
    assert t["pages"] >= 3 * 2 * 96 * 256, text
    assert ok and all(it.passed for it in soak.results), text
