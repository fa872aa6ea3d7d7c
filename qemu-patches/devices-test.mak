# The devices of qemu-system-x86_64 built by `make qemu-test` (QEMU_DEVICES=test
# in build.sh): what the test harness (tests/harness/guest.py) and the
# migration tests put in a guest, nothing else; QEMU's Kconfig adds what
# these select (the q35 board brings its chipset, ISA serial, fw_cfg).
CONFIG_Q35=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_BALLOON=y
CONFIG_VIRTIO_MEM=y
CONFIG_VIRTIO_RNG=y
CONFIG_VIRTIO_BLK=y
CONFIG_PCIE_PORT=y
# what stock Debian QEMU's q35 instantiates by default and migrates: without
# them a stock source's stream carries sections (hpet, vmmouse) this build
# cannot load, and a stock -> patched migration fails
CONFIG_HPET=y
CONFIG_VMPORT=y
CONFIG_VMMOUSE=y
