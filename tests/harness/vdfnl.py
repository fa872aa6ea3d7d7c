"""Reading `vdfnl` output in a guest: its key=value lines.

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
