"""What both soaks (fault_soak.py, migration_soak.py) share: their error
type and the check that the parts they boot are built.

A soak runs for minutes to hours; it checks what it needs before the
first guest boots, so a missing build says so at once and by name.
"""
from harness.guest import BUILD


class SoakError(Exception):
    """A soak could not go on (not a failed check: those are counted)."""


def require_built(kernel):
    """Raise SoakError naming every part a soak boots that is not built
    for guest kernel release `kernel`."""
    missing = [p for p in (BUILD / "agent/vmdefrag-agent",
                           BUILD / "module" / kernel / "vmdefrag.ko",
                           BUILD / "daemon/vmdefragd", BUILD / "guest/memcheck")
               if not p.exists()]
    if missing:
        raise SoakError("not built: " + ", ".join(str(p) for p in missing)
                        + " (run make all)")
