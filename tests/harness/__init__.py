"""Test harness for vmdefrag: boots real Debian guest kernels under QEMU.

guest.py      Guest: boot, run commands in the guest, QMP, clean shutdown
initramfs.py  builds the per-kernel test initramfs (busybox, virtio modules,
              vmdefrag.ko, agent, workloads)
qmp.py        a minimal QMP client
hostmem.py    host-side measurements of a QEMU process's guest RAM
otheruser.py  what a test runs or hands over as another user, copied where
              that user can reach it wherever the checkout lives
unixsock.py   connecting to a unix socket a process is about to create
lifecycle.py  StartStop: `with` starts a process, stops it if start fails
"""
