"""Context-manager entry for the harness's processes (guests, libvirtd)."""


class StartStop:
    """`with X(...) as x:` starts x, and stops it again if starting fails
    part way (a half-started QEMU or libvirtd must not outlive the test).
    Subclasses define start() and stop() and their own __exit__."""

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self
