// SPDX-License-Identifier: GPL-2.0
/*
 * vacate_smoke: calls the movable-slab series' kmem_cache_vacate_range()
 * on every 2 MiB block of [start_mib, end_mib) and logs the totals.  A
 * smoke test of the kernel API alone, without vmdefrag.ko: loading it
 * does the work (rmmod it after).  Build it with
 *   make -C build/guest-kernel/obj M=$PWD/tests/slow/vacate_smoke modules
 * (in a copy: kbuild writes its objects beside the source).
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mm.h>

static unsigned long start_mib = 16;
static unsigned long end_mib = 1024;
module_param(start_mib, ulong, 0444);
module_param(end_mib, ulong, 0444);

static int __init vacate_smoke_init(void)
{
	struct slab_vacate_stats st = {};
	unsigned long pfn, step = (2UL << 20) >> PAGE_SHIFT;
	unsigned long clean = 0, busy = 0;
	int err;

	for (pfn = (start_mib << 20) >> PAGE_SHIFT;
	     pfn < (end_mib << 20) >> PAGE_SHIFT; pfn += step) {
		err = kmem_cache_vacate_range(pfn, pfn + step, &st);
		if (err == -EINTR || err == -ENOMEM)
			return err;
		if (err)
			busy++;
		else
			clean++;
	}
	pr_info("vacate_smoke: blocks_clean=%lu blocks_busy=%lu slabs_scanned=%lu slabs_vacated=%lu slabs_busy=%lu objs_isolated=%lu objs_moved=%lu\n",
		clean, busy, st.slabs_scanned, st.slabs_vacated,
		st.slabs_busy, st.objs_isolated, st.objs_moved);
	return 0;
}

static void __exit vacate_smoke_exit(void)
{
}

module_init(vacate_smoke_init);
module_exit(vacate_smoke_exit);
MODULE_LICENSE("GPL");
