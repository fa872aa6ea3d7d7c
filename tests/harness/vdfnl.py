"""Reading the guest module's key=value output: `vdfnl`'s lines and its
debugfs files.

    out = kv(g.check("vdfnl scan"))
    pinned = num(out, "cause.slab_reclaim")
"""


def kv(out):
    """key=value lines of vdfnl output; the last value of a key wins."""
    d = {}
    for line in out.splitlines():
        key, sep, val = line.partition("=")
        if sep:
            d[key] = val
    return d


def num(d, key):
    """d[key] as an integer (decimal or 0x hex, as vdfnl prints them)."""
    return int(d[key], 0)


def evict_debugfs(g):
    """The module's debugfs vmdefrag/evict in guest g (debugfs mounted
    first if it is not): what eviction evicted, invalidated and left, per
    policy and cache."""
    return kv(g.check("mountpoint -q /sys/kernel/debug || mount -t debugfs "
                      "none /sys/kernel/debug; cat /sys/kernel/debug/vmdefrag/evict"))
