"""make bench, policy section: does vmdefrag's `policy = auto` keep three
guests dense by itself while their memory comes and goes, against free
page reporting alone?

    tests/bench/run-bench --only policy [--policy-mode fpr,auto,auto+fpr]

One run per mode, each with three fresh guests on this host (GUESTS, RAM_MIB
each, 1 vCPU, the oldest guest kernel, RAM a memfd share=on):

  fpr       free page reporting alone (virtio-balloon free-page-reporting=on):
            no module, no daemon;
  auto      the same guests with free page reporting off, vmdefrag.ko
            (floor_mb=FLOOR_MIB) and the agent in each, and one vmdefragd
            for the three with `policy = auto` in each VM's section (the
            shared backend: memfd share=on); nobody types a reclaim;
  auto+fpr  auto with free page reporting on as well (not run by default).

Why reporting is off in the auto run: with both, the blocks the
policy returns to a guest that needs memory (re-backed in 2 MiB folios
before the guest is told) lie free in the guest for a moment, whole, and
free page reporting hands them back to QEMU, which punches them again: the
guest then faults its memory in anew, 4 KiB at a time (measured on
2026-12-01: 110 of 150 MiB a return had re-backed were gone again two
seconds later).

All three run tests/guest/phased.c at once, with the same sizes and seeds in
both runs: grow (anonymous memory and tmpfs files, interleaved) to most of
their RAM, fragment (free all but KEEP_PCT percent, page by page at random),
idle, grow2 (new anonymous memory, about what fragment freed: the guest
needs back what the host may have taken), fragment2, idle2; then it
verifies every page it kept.  The workload times each 2 MiB it touches and
counts those slower than 100 ms (stalls).

Sampled every SAMPLE_S, per guest: host backing of its RAM (st_blocks of the
memfd: the kernel's accounting, never the daemon's), the guest's MemFree,
oom_kill (/proc/vmstat), the module's statistics (vdfnl stats: captured
bytes, floor, pressure_releases, oom_releases) where it is loaded, and the
daemon's status (policy, headroom_bytes, policy_misses) in the auto run.
"Guest used" is what the guest does not have free: RAM - MemFree - captured
(captured blocks are the host's); the reference is used + floor, the floor
being the module's (the fpr run has no module: FLOOR_MIB, the floor the
auto run's module is loaded with).

Per phase, for both runs side by side: host backing and used + floors
(sums over the three guests) at the phase's end (idle phases: the last
sample where all three still idled; the others: once all three finished
it), their ratio and the goal "within 10%" (idle phases), for idle phases
the time until the sum first came within 10%, stalls, OOM kills, pressure
releases and policy misses.  A chart of the summed backing over time
(stacked per guest) with the reference and the phase boundaries is drawn
with gnuplot into build/bench/policy.svg.
"""
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "tests"))

from harness.guest import Guest  # noqa: E402
from harness.initramfs import BUILD  # noqa: E402
from harness.vmdefragd import VMDEFRAGCTL, VMDEFRAGD, Daemon, start_agent  # noqa: E402

MIB = 1 << 20
OUT = BUILD / "bench"
GUESTS = 3
RAM_MIB = 512
FLOOR_MIB = 64
SAMPLE_S = 2
IDLE_S = 60
KEEP_PCT = 15
SEED = 11
# of the guest's MemTotal: grow's anonymous memory and files; grow2 as a
# fraction of what fragment frees
ANON_FRAC = 0.50
FILE_FRAC = 0.18
GROW2_FRAC = 0.85
PHASES = ["grow", "fragment", "idle", "grow2", "fragment2", "idle2", "exit"]
EXIT_S = 16     # sampled after the workloads exited: all their memory freed
IDLE_PHASES = ("idle", "idle2")
AT_END = IDLE_PHASES + ("exit",)    # phases valued at their end, not their peak
MODES = ("fpr", "auto", "auto+fpr")
DEFAULT_MODES = ("fpr", "auto")
LABELS = {"fpr": "free page reporting alone", "auto": "vmdefrag policy = auto",
          "auto+fpr": "vmdefrag policy = auto, free page reporting on too"}
GOAL = 0.10
STALL_MS = 100

T0 = time.monotonic()


def log(msg):
    print(f"[bench-policy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def unavailable(kernel):
    """Why the auto run cannot run here, or None."""
    for path in (VMDEFRAGD, VMDEFRAGCTL, BUILD / "agent/vmdefrag-agent",
                 BUILD / "module" / kernel / "vmdefrag.ko", BUILD / "guest/vdfnl"):
        if not path.exists():
            return f"{path.relative_to(TOP)} not built"
    p = subprocess.run([str(VMDEFRAGCTL), "--help"], capture_output=True, text=True)
    if "policy" not in p.stdout + p.stderr:
        return "vmdefragctl has no policy command (no policy engine in this tree)"
    return None


# ---- one guest ------------------------------------------------------------------------

class Subject:
    """One guest of a run: its QEMU, the workload in it and what was read."""

    def __init__(self, g, index):
        self.g = g
        self.index = index
        self.name = f"pb{index}"
        self.out_off = 0           # bytes of /tmp/phased.out already read
        self.partial = ""
        self.events = []           # parsed phased lines
        self.t_launch = None       # host time (s since the run's start) of the launch
        self.pid = None
        self.finished = False

    def launch(self, args, t):
        out = self.g.check(f"phased {args} >/tmp/phased.out 2>&1 & echo $!")
        self.pid = int(out.split()[-1])
        self.t_launch = t

    def sample(self, module):
        """Reads the guest's side in one command: meminfo, oom_kill, module
        stats, the workload's new output and whether it still runs."""
        cmd = ("grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo; "
               "grep -E '^oom_kill ' /proc/vmstat; "
               + ("vdfnl stats 2>/dev/null; " if module else "")
               + f"kill -0 {self.pid} 2>/dev/null && echo running=1; "
               f"echo ==out; tail -c +{self.out_off + 1} /tmp/phased.out")
        _, text = self.g.run(cmd, timeout=120)
        head, _, out = text.partition("==out\n")
        s = {}
        for line in head.splitlines():
            m = re.match(r"(MemTotal|MemFree|MemAvailable):\s+(\d+) kB", line)
            if m:
                s[m.group(1)] = int(m.group(2)) * 1024
            m = re.match(r"(oom_kill) (\d+)$", line) or re.match(r"(\w+)=(\d+)$", line)
            if m:
                s[m.group(1)] = int(m.group(2))
        self.out_off += len(out.encode())
        data = self.partial + out
        lines = data.split("\n")
        self.partial = lines.pop()
        for line in lines:
            ev = parse_event(line)
            if ev:
                self.events.append(ev)
                if ev["event"] == "done":
                    self.finished = True
                if ev["event"] in ("phase", "done"):
                    log(f"  {self.name}: {line.strip()}")
            elif line.strip():
                self.events.append({"event": "text", "text": line.strip()[:300]})
        if not s.get("running") and not self.finished:
            self.finished = True
            self.events.append({"event": "died"})
            log(f"  {self.name}: phased is gone without a done line")
        return s

    def windows(self, t_end):
        """{phase: (start, end)} in host seconds since the run's start; the
        pseudo-phase "exit" from the workload's done line to t_end."""
        w, starts = {}, {}
        for ev in self.events:
            if ev["event"] == "phase":
                starts[ev["phase"]] = self.t_launch + ev["t_ms"] / 1000
            elif ev["event"] == "end" and ev["phase"] in starts:
                w[ev["phase"]] = (starts[ev["phase"]], self.t_launch + ev["t_ms"] / 1000)
            elif ev["event"] == "done":
                w["exit"] = (self.t_launch + ev["t_ms"] / 1000, t_end)
        return w

    def phase_end(self, phase):
        for ev in self.events:
            if ev["event"] == "end" and ev["phase"] == phase:
                return ev
        return None

    def done(self):
        for ev in self.events:
            if ev["event"] == "done":
                return ev
        return None


def parse_event(line):
    """A phased output line as a dict (numbers as int/float), or None."""
    if not line.startswith("phased: "):
        return None
    ev = {}
    for word in line[8:].split():
        k, sep, v = word.partition("=")
        if not sep or not re.fullmatch(r"[a-z_0-9]+", k):
            return None
        if re.fullmatch(r"\d+", v):
            ev[k] = int(v)
        elif re.fullmatch(r"\d+\.\d+", v):
            ev[k] = float(v)
        else:
            ev[k] = v[:40]
    return ev if "event" in ev else None


def daemon_status(d):
    """{VM name: its status object}: vmdefragctl status --json, read here
    without the harness's unit-naming lint (a bench reports; it does not
    review the daemon's JSON)."""
    p = d.ctl("status", "--json", check=False, timeout=60)
    try:
        return {v["name"]: v for v in json.loads(p.stdout)["vms"]}
    except (ValueError, KeyError, TypeError):
        return {}


def find_key(obj, key):
    """obj[key], looked for at the top and one level down (the daemon's
    status may group the policy's fields)."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    for v in obj.values():
        if isinstance(v, dict) and key in v:
            return v[key]
    return None


# ---- one run -------------------------------------------------------------------------

def sizes(memtotal):
    anon = int(memtotal * ANON_FRAC) // MIB
    files = int(memtotal * FILE_FRAC) // MIB
    grow2 = int((anon + files) * (100 - KEEP_PCT) / 100 * GROW2_FRAC)
    return anon, files, grow2


def policy_config(names, extra):
    out = []
    for n in names:
        out += [f"[vm {n}]", "policy = auto"] + [f"{k} = {v}" for k, v in extra] + [""]
    return "\n".join(out)


def run_mode(kernel, mode, ram_mib, idle_s, policy_set):
    """One run; its record (samples, events, per-guest results)."""
    auto = mode.startswith("auto")
    fpr = mode != "auto"
    rec = {"mode": mode, "ram_mib": ram_mib, "guests": GUESTS, "idle_s": idle_s,
           "fpr": fpr, "samples": []}
    workdir = OUT / f"policy-{mode}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    subjects = [Subject(Guest(kernel, ram_mib=ram_mib, fpr=fpr, smp=1, backend="memfd",
                              name=f"policy-{mode}-{i}", daemon_monitor=auto), i)
                for i in range(GUESTS)]
    with ExitStack() as stack:
        # Boot the three at once, each from a thread of its own.  QEMU's
        # PR_SET_PDEATHSIG fires when the *thread* that started it ends, so
        # the pool's threads live until after the guests stopped: the pool
        # is entered first and left last.
        ex = stack.enter_context(ThreadPoolExecutor(GUESTS))
        futs = [ex.submit(s.g.__enter__) for s in subjects]
        errors = []
        for s, fut in zip(subjects, futs):
            try:
                fut.result(timeout=900)
                stack.push(s.g)        # its __exit__ on the way out
            except Exception as e:    # the others still get stopped
                errors.append(e)
        if errors:
            raise errors[0]
        log(f" {mode}: {GUESTS} guests up")
        d = None
        if auto:
            for s in subjects:
                start_agent(s.g, floor_mb=FLOOR_MIB)
            d = Daemon(workdir, [(s.name, s.g.daemon_qmp_socket, s.g.vdf_socket)
                                 for s in subjects],
                       config=policy_config([s.name for s in subjects], policy_set),
                       log_level="debug")
            stack.enter_context(d)
            for s in subjects:
                d.wait_ready(s.name, timeout=180)
                d.wait_reconciled(s.name)
            rec["policy_config"] = policy_config(["VM"], policy_set)
        memtotal = subjects[0].g.meminfo()["MemTotal"]
        anon, files, grow2 = sizes(memtotal)
        rec["workload"] = {"anon_mib": anon, "file_mib": files, "grow2_mib": grow2,
                           "keep_pct": KEEP_PCT, "idle_s": idle_s, "memtotal": memtotal}
        t0 = time.monotonic()
        for s in subjects:
            s.launch(f"--seed {SEED + s.index} --anon-mib {anon} --file-mib {files} "
                     f"--grow2-mib {grow2} --keep {KEEP_PCT} --idle {idle_s}",
                     time.monotonic() - t0)
        log(f" {mode}: phased running: anon {anon} MiB, files {files} MiB, grow2 "
            f"{grow2} MiB, keep {KEEP_PCT}%, idle {idle_s} s")
        deadline = t0 + 2 * idle_s + 900
        t_all_done = None
        while t_all_done is None or time.monotonic() - t_all_done < EXIT_S:
            if time.monotonic() > deadline:
                rec["note"] = "the workload did not finish in time"
                break
            if t_all_done is None and all(s.finished for s in subjects):
                t_all_done = time.monotonic()
            tick = time.monotonic()
            row = {"t": tick - t0, "guests": []}
            status = daemon_status(d) if d else {}
            for s in subjects:
                gs = s.sample(module=auto)
                gs["backing"] = s.g.backing_bytes() or 0
                gs["ts"] = time.monotonic() - t0
                vm = status.get(s.name, {})
                pol = vm.get("policy") or {}
                if pol.get("mode"):
                    gs["policy"] = pol["mode"]
                for key in ("headroom_bytes", "policy_misses", "reclaims", "returns"):
                    v = find_key(pol, key)
                    if isinstance(v, int):
                        gs[key] = v
                act = pol.get("last_action") or {}
                if act.get("action"):
                    gs["last_action"] = f"{act['action']}: {str(act.get('reason'))[:120]}"
                mem = vm.get("memory") or {}
                for key in ("reclaimed_bytes", "returned_bytes", "guest_released_bytes"):
                    if key in mem:
                        gs[key] = mem[key]
                row["guests"].append(gs)
            rec["samples"].append(row)
            time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - tick)))
        rec["wall_s"] = time.monotonic() - t0
        if d:
            rec["daemon_alive"] = d.alive()
    # after the guests stopped: their consoles
    rec["subjects"] = []
    for s in subjects:
        console = getattr(s.g, "console", "") or ""
        rec["subjects"].append({
            "name": s.name, "t_launch": s.t_launch, "events": s.events,
            "windows": s.windows(rec["samples"][-1]["t"] if rec["samples"] else 0),
            "oom_console": len(re.findall(r"Out of memory: Killed process", console)),
        })
    return rec


def saved(mode):
    return OUT / f"policy-{mode}.json"


def run(kernel, ram_mib=RAM_MIB, modes=DEFAULT_MODES, idle_s=IDLE_S, policy_set=(),
        reuse=()):
    """Runs the modes asked, and reads back the record of those in `reuse`
    that an earlier run saved (build/bench/policy-MODE.json: a rerun of one
    half costs the shared CPU five minutes less); (records by mode, info)."""
    info = {"guest kernel": kernel, "guests": f"{GUESTS} x {ram_mib} MiB, 1 vCPU, memfd",
            "sample interval": f"{SAMPLE_S} s"}
    recs = {}
    t = time.monotonic()
    for mode in reuse:
        rec = json.loads(saved(mode).read_text())
        for s in rec.get("subjects", []):
            s["windows"] = {k: tuple(v) for k, v in s["windows"].items()}
        rec["reused"] = rec.get("date", "?")
        recs[mode] = rec
        log(f" run {mode}: reused from {saved(mode)} ({rec['reused']})")
    for mode in modes:
        if mode in reuse:
            continue
        if mode.startswith("auto"):
            why = unavailable(kernel)
            if why:
                recs[mode] = {"mode": mode, "skipped": why}
                log(f" auto run skipped: {why}")
                continue
        log(f" run {mode}: {LABELS[mode]}")
        try:
            recs[mode] = run_mode(kernel, mode, ram_mib, idle_s, policy_set)
            recs[mode]["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")
            saved(mode).write_text(json.dumps(recs[mode], default=str))
        except Exception as e:   # reported in the table; the other run still runs
            recs[mode] = {"mode": mode, "error": f"{type(e).__name__}: "
                                                 f"{str(e).splitlines()[0][:160]}"}
            (OUT / f"error-policy-{mode}.txt").write_text(traceback.format_exc())
            log(f" run {mode}: ERROR {recs[mode]['error']}")
    info["policy section wall time"] = f"{(time.monotonic() - t) / 60:.1f} min"
    return recs, info


# ---- analysis --------------------------------------------------------------------------

def guest_used(gs, ram):
    return ram - gs.get("MemFree", 0) - gs.get("captured_bytes", 0)


def guest_floor(gs):
    return gs.get("floor_bytes") or FLOOR_MIB * MIB


def series(rec):
    """[(t, [backing per guest], used sum, used + floors sum, [each guest's
    sample time])] of a run."""
    ram = rec["ram_mib"] * MIB
    out = []
    for row in rec["samples"]:
        gl = row["guests"]
        used = sum(guest_used(g, ram) for g in gl)
        out.append((row["t"], [g["backing"] for g in gl], used,
                    used + sum(guest_floor(g) for g in gl),
                    [g.get("ts", row["t"]) for g in gl]))
    return out


def rows_inside(rec, ser, phase):
    """The sample rows in which every guest was sampled inside its own
    window of the phase."""
    ws = [s["windows"].get(phase) for s in rec["subjects"]]
    if any(w is None for w in ws):
        return []
    return [p for p in ser if all(w[0] <= ts <= w[1] for w, ts in zip(ws, p[4]))]


def phase_span(rec, phase):
    """(start, end) of a phase across the guests: idle phases from the last
    guest's start to the first guest's end (all three idle); the others
    from the first start to the last end.  None if a guest never ran it."""
    ws = [s["windows"].get(phase) for s in rec["subjects"]]
    if any(w is None for w in ws):
        return None
    if phase in IDLE_PHASES:
        return max(w[0] for w in ws), min(w[1] for w in ws)
    return min(w[0] for w in ws), max(w[1] for w in ws)


def counter_delta(rec, key, phase):
    """Sum over guests of counter `key`'s increase over the samples inside
    each guest's own window of the phase (from the sample before it)."""
    total, seen = 0, False
    for i, s in enumerate(rec["subjects"]):
        w = s["windows"].get(phase)
        if w is None:
            continue
        vals = [(row["guests"][i].get("ts", row["t"]), row["guests"][i].get(key))
                for row in rec["samples"]]
        vals = [(t, v) for t, v in vals if v is not None]
        before = [v for t, v in vals if t < w[0]]
        inside = [v for t, v in vals if w[0] <= t <= w[1] + SAMPLE_S]
        if not inside:
            continue
        seen = True
        total += inside[-1] - (before[-1] if before else inside[0])
    return total if seen else None


def summarize(rec):
    """Per phase: {backing, ref, ratio, within, t_within, stalls, ooms,
    releases, misses}."""
    ser = series(rec)
    out = {}
    for phase in PHASES:
        span = phase_span(rec, phase)
        row = {}
        stalls = [s_end.get("stalls") for s_end in
                  (next((e for e in s["events"] if e["event"] == "end"
                         and e["phase"] == phase), None) for s in rec["subjects"])
                  if s_end is not None]
        row["stalls"] = sum(stalls) if stalls else None
        row["max_ms"] = max((e["max_ms"] for s in rec["subjects"] for e in s["events"]
                             if e["event"] == "end" and e["phase"] == phase), default=None)
        row["mean_ms"] = mean_step_ms(rec, phase)
        if span and phase in AT_END:
            inside = rows_inside(rec, ser, phase)
            if inside:
                _, b, used, ref, _ = inside[-1]
                row.update(backing=sum(b), ref=ref, used=used,
                           ratio=sum(b) / ref if ref else None)
                row["within"] = row["ratio"] is not None and row["ratio"] <= 1 + GOAL
            if phase in IDLE_PHASES:
                hit = [p[0] for p in inside if sum(p[1]) <= (1 + GOAL) * p[3]]
                row["t_within"] = hit[0] - span[0] if hit else None
                row["idle_s"] = span[1] - span[0]
        elif span:
            # grow and fragment phases: the peaks over the phase
            pts = [p for p in ser if span[0] <= p[0] <= span[1] + SAMPLE_S]
            if pts:
                row["backing"] = max(sum(p[1]) for p in pts)
                row["ref"] = max(p[3] for p in pts)
                row["ratio"] = row["backing"] / row["ref"] if row["ref"] else None
        row["ooms"] = counter_delta(rec, "oom_kill", phase)
        pr = counter_delta(rec, "pressure_releases", phase)
        orl = counter_delta(rec, "oom_releases", phase)
        row["releases"] = None if pr is None else pr + (orl or 0)
        row["misses"] = counter_delta(rec, "policy_misses", phase)
        out[phase] = row
    return out


def mean_step_ms(rec, phase):
    """The mean of the guests' mean 2 MiB step times in the phase, or None."""
    ms = [e["mean_ms"] for s in rec["subjects"] for e in s["events"]
          if e["event"] == "end" and e["phase"] == phase and e.get("steps")]
    return sum(ms) / len(ms) if ms else None


def verdicts(rec):
    """Per guest: the workload's data verdict."""
    out = []
    for s in rec["subjects"]:
        done = next((e for e in s["events"] if e["event"] == "done"), None)
        if done:
            out.append(done["verify"])
        elif any(e["event"] == "died" for e in s["events"]):
            out.append("died")
        else:
            out.append("unfinished")
    return out


# ---- output -----------------------------------------------------------------------------

def mib(b):
    return "-" if b is None else f"{b / MIB:.0f}"


def num(v):
    return "-" if v is None else str(v)


def pair(recs, sums, fn):
    cells = []
    for mode in shown(recs):
        if mode not in sums:
            cells.append("-")
        else:
            cells.append(fn(sums[mode]))
    return " / ".join(cells)


HEAD = ["phase", "host backing MiB", "guest used + floors MiB", "backing / (used + floors)",
        "within 10%", "came within 10% after", "stalls > 100 ms (mean, max ms)", "OOM kills",
        "pressure releases", "policy misses"]


def table_rows(recs):
    sums = {m: summarize(r) for m, r in recs.items() if "samples" in r}
    rows = []
    for phase in PHASES:
        def get(key, fmt, phase=phase):
            return pair(recs, {m: s[phase] for m, s in sums.items()},
                        lambda r: fmt(r.get(key)))
        rows.append([
            phase,
            get("backing", mib), get("ref", mib),
            get("ratio", lambda v: "-" if v is None else f"{v:.2f}"),
            get("within", lambda v: "-" if v is None or phase not in IDLE_PHASES
                else ("yes" if v else "NO")),
            get("t_within", lambda v: "-" if phase not in IDLE_PHASES
                else ("never" if v is None else f"{v:.0f} s")),
            pair(recs, {m: s[phase] for m, s in sums.items()},
                 lambda r: "-" if r.get("stalls") is None else
                 f"{r['stalls']} ({r['mean_ms']:.0f}, {r['max_ms']:.0f})"
                 if r.get("mean_ms") else str(r["stalls"])),
            get("ooms", num), get("releases", num), get("misses", num),
        ])
    return rows


def shown(recs):
    """The modes the table and chart show: the default ones and any other
    that was run, in MODES order."""
    return [m for m in MODES if m in DEFAULT_MODES or m in recs]


def header_line(recs):
    parts = []
    for mode in shown(recs):
        r = recs.get(mode, {})
        if "skipped" in r:
            parts.append(f"{mode}: not run ({r['skipped']})")
        elif "error" in r:
            parts.append(f"{mode}: error ({r['error']})")
        elif "samples" in r:
            v = verdicts(r)
            parts.append(f"{mode}: free page reporting {'on' if r.get('fpr', True) else 'off'}"
                         f", data {', '.join(v)}; {r['wall_s'] / 60:.1f} min, "
                         f"{r.get('date', '?')}"
                         + (f"; {r['note']}" if r.get("note") else ""))
        else:
            parts.append(f"{mode}: not run")
    return "Each cell: " + " / ".join(shown(recs)) + ".  " + "; ".join(parts)


def text(recs):
    rows = table_rows(recs)
    widths = [max(len(str(x[i])) for x in rows + [HEAD]) for i in range(len(HEAD))]
    lines = [header_line(recs), "",
             "  ".join(str(c).ljust(w) for c, w in zip(HEAD, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(x, widths)) for x in rows]
    return "\n".join(lines)


def md(recs):
    rows = table_rows(recs)
    out = [header_line(recs), "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def goals(recs):
    """The issue's goals, one line each per auto run (reported, never
    failed on)."""
    sums = {m: summarize(r) for m, r in recs.items() if "samples" in r}
    out = []
    f = sums.get("fpr")
    autos = [m for m in shown(recs) if m.startswith("auto") and m in sums]
    for m in autos:
        a = sums[m]
        for phase in IDLE_PHASES:
            r = a[phase]
            if r.get("ratio") is None:
                out.append(f"{m}, {phase}: not measured")
                continue
            fr = f[phase].get("ratio") if f else None
            out.append(f"{m}, end of {phase}: host backing {r['ratio']:.2f} x (used + "
                       f"floors) (goal <= {1 + GOAL:.2f}): "
                       + ("met" if r["within"] else "NOT met")
                       + ("" if fr is None else f"; reporting alone {fr:.2f} x"))
        ooms = sum(r.get("ooms") or 0 for r in a.values())
        out.append(f"{m}: OOM kills {ooms} (goal 0): " + ("met" if ooms == 0 else "NOT met"))
        if f:
            sa = sum(r.get("stalls") or 0 for r in a.values())
            sf = sum(r.get("stalls") or 0 for r in f.values())
            out.append(f"{m}: stalls > {STALL_MS} ms {sa}, reporting alone {sf} (goal: "
                       "no more): " + ("met" if sa <= sf else "NOT met"))
        misses = [r.get("misses") for r in a.values() if r.get("misses") is not None]
        out.append(f"{m}: policy misses " + (str(sum(misses)) if misses else
                                              "not reported by the daemon"))
    if f and not autos:
        out.append("auto: not run; reporting alone measured only")
    return out


def notes(recs, info):
    w = next((r["workload"] for r in recs.values() if "workload" in r), None)
    wl = (f"phased --anon-mib {w['anon_mib']} --file-mib {w['file_mib']} --grow2-mib "
          f"{w['grow2_mib']} --keep {w['keep_pct']} --idle {w['idle_s']}" if w else "phased")
    pc = next((r["policy_config"] for r in recs.values() if "policy_config" in r), None)
    return [
        f"{GUESTS} guests at once, {info['guests']}; free page reporting "
        + "on in the fpr run, off in the auto run (the policy's returns would be "
        "reported and punched again: tests/bench/policy_bench.py), on in auto+fpr; "
        f"each runs `{wl}` (seeds {SEED}..{SEED + GUESTS - 1}, the same in every run): "
        "grow (anonymous memory and 16 KiB tmpfs files, interleaved), fragment (all "
        f"but {KEEP_PCT}% freed page by page at random), idle, grow2 (anonymous, about "
        "what fragment freed), fragment2, idle2; then every kept page is verified.",
        "host backing: st_blocks of each guest's RAM memfd, summed; guest used: RAM - "
        "MemFree - the module's captured bytes (all the guest does not have free, what "
        "its kernel reserved at boot included); floors: the module's floor_bytes (the "
        f"fpr run has no module: {FLOOR_MIB} MiB each, the floor_mb the auto run loads "
        "the module with). Idle phases and exit (the workloads gone, everything they "
        "had freed): the last sample in which all three guests were in the phase; "
        "grow and fragment phases: the peaks of both sums over the phase.",
        "came within 10%: from the start of the idle phase (the third guest's) until "
        "the summed backing first was within 10% of the summed used + floors.",
        f"stalls: 2 MiB steps of the grow phases that took the workload over {STALL_MS} "
        "ms (its own CLOCK_MONOTONIC; under TCG on a shared 2-core host: slow steps "
        "happen without any memory pressure too, so compare the runs, and grow, "
        "where nothing differs between them yet, shows the noise); mean: the mean "
        "step, max: the slowest.",
        "OOM kills: the guests' /proc/vmstat oom_kill; pressure releases: the module's "
        "pressure_releases + oom_releases (its shrinker and OOM notifier gave captured "
        "blocks back because the guest needed them); policy misses: the daemon's "
        "policy_misses.",
        "auto run's configuration, per VM: " + (pc.replace("\n", "; ").strip("; ")
                                                 if pc else "-"),
    ]


# ---- chart -------------------------------------------------------------------------------

def chart(recs, path):
    """`path` (an .svg) and the same chart as a PNG beside it: one panel per
    run, the three guests' backing stacked, used + floors and used as
    lines, phase boundaries.  (the SVG's path, None) or (None, why not)."""
    gp = shutil.which("gnuplot")
    if not gp:
        return None, "gnuplot is not installed (make deps)"
    runs = [m for m in shown(recs) if "samples" in recs.get(m, {}) and recs[m]["samples"]]
    if not runs:
        return None, "no run to draw"
    ram_total = max(recs[m]["ram_mib"] * GUESTS for m in runs)
    tmax = max(recs[m]["samples"][-1]["t"] for m in runs)
    script = [f"set multiplot layout {len(runs)},1",
              "set xlabel 'seconds since the workload started'",
              "set ylabel 'MiB'",
              f"set xrange [0:{tmax:.0f}]",
              f"set yrange [0:{ram_total * 1.08:.0f}]",
              "set key outside right top vertical",
              "set grid ytics lc rgb '#dddddd'",
              "set style fill solid 0.55 noborder"]
    colors = ["#4e79a7", "#f28e2b", "#59a14f"]
    for m in runs:
        rec = recs[m]
        dat = OUT / f"policy-{m}.dat"
        with open(dat, "w") as f:
            f.write("# t backing_g0 backing_g1 backing_g2 used_sum used_plus_floors_sum (MiB)\n")
            for t, b, used, ref, _ in series(rec):
                f.write(f"{t:.1f} " + " ".join(f"{x / MIB:.1f}" for x in b)
                        + f" {used / MIB:.1f} {ref / MIB:.1f}\n")
        script.append("unset arrow; unset label")
        for i, phase in enumerate(PHASES):
            span = phase_span(rec, phase)
            if not span:
                continue
            script.append(f"set arrow from {span[0]:.1f},graph 0 to {span[0]:.1f},graph 1 "
                          "nohead lc rgb '#888888' dt 2")
            script.append(f"set label '{phase}' at {span[0]:.1f},graph 0.98 rotate by 90 "
                          "right offset 1,0 font ',9' tc rgb '#555555'")
        script.append(f"set title \"{LABELS[m]}: {GUESTS} guests x {rec['ram_mib']} MiB, "
                      "host backing stacked per guest\"")
        stack = [f"'{dat}' using 1:(" + "+".join(f"${j + 2}" for j in range(k + 1))
                 + f") with filledcurves x1 lc rgb '{colors[k % 3]}' title 'guest {k}'"
                 for k in reversed(range(GUESTS))]
        lines = [f"'{dat}' using 1:{GUESTS + 3} with lines lw 2 lc rgb 'black' "
                 "title 'guests used + floors'",
                 f"'{dat}' using 1:{GUESTS + 2} with lines lw 1 dt 3 lc rgb 'black' "
                 "title 'guests used'",
                 f"{ram_total} with lines lw 1 dt 4 lc rgb '#aa0000' title 'guest RAM'"]
        script.append("plot " + ", ".join(stack + lines))
    script.append("unset multiplot")
    height = 380 * len(runs)
    terms = [(path, f'svg size 1000,{height} dynamic enhanced font "sans,11" '
                    'background "white"'),
             (path.with_suffix(".png"), f'pngcairo size 1200,{height * 6 // 5} '
                                        'enhanced font "sans,10" background "white"')]
    for out, term in terms:
        gpfile = out.with_suffix(".gp")
        gpfile.write_text("\n".join([f"set terminal {term}", f"set output '{out}'"]
                                    + script) + "\n")
        p = subprocess.run([gp, str(gpfile)], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            return None, f"gnuplot failed ({out.name}): " + p.stderr.strip()[-300:]
    return path, None


__all__ = ["run", "text", "md", "goals", "notes", "chart"]
