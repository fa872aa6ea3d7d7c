// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag.ko: empty 2 MiB guest-physical blocks and hand them to the host.
 *
 * This file only sequences the module's life and holds its statistics.
 *
 *   load     calibrate slab naming (slabcal.c; failure only degrades
 *            names), set up the captured set (capture.c), register the
 *            generic netlink family (genl.c), then the shrinker and the OOM
 *            notifier (pressure.c) - from then on requests may capture.
 *   running  requests arrive through genl.c; pressure.c may release.
 *   unload   in reverse: stop the pressure callbacks, refuse new requests
 *            and release every captured block with an EVENT_RELEASED
 *            (reason UNLOAD) while listeners can still hear it, unregister
 *            the family (which waits for requests in flight), and check
 *            nothing is left.  Every page captured goes back to the guest.
 *
 * Statistics are atomic64 counters, monotonic since load, bumped from any
 * context without a lock; STATS reads them one by one.  The work counters
 * (enum vdf_work: what vacating cost, in calls, pages and time) are the
 * same kind but stay off the wire: debugfs vmdefrag/work prints them as
 * key=value lines (the bench reads them; nothing depends on debugfs).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/pageblock-flags.h>
#include <linux/seq_file.h>

#include "vmdefrag.h"

atomic64_t vdf_stats[VDF_STAT_NR];
atomic64_t vdf_work[VDF_WORK_NR];

static const char *const vdf_work_names[VDF_WORK_NR] = {
	[VDF_WORK_CONTIG_CALLS]		= "contig_calls",
	[VDF_WORK_CONTIG_FAILED]	= "contig_failed",
	[VDF_WORK_RUNS_SPLIT]		= "runs_split",
	[VDF_WORK_BLOCKS_TRIED]		= "blocks_tried",
	[VDF_WORK_PAGES_MOVED]		= "pages_moved",
	[VDF_WORK_FAILED_NS]		= "failed_ns",
	[VDF_WORK_RANK_NS]		= "rank_ns",
};

static struct dentry *vdf_debugfs;

static int vdf_work_show(struct seq_file *m, void *v)
{
	unsigned int i;

	for (i = 0; i < VDF_WORK_NR; i++)
		seq_printf(m, "%s=%lld\n", vdf_work_names[i], atomic64_read(&vdf_work[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vdf_work);

static int __init vdf_init(void)
{
	int ret;

	BUILD_BUG_ON(VMDEFRAG_A_STAT_BLOCKS_COMPACTED -
		     VMDEFRAG_A_STAT_BLOCKS_SCANNED + 1 != VDF_STAT_NR);
	BUILD_BUG_ON(VMDEFRAG_BLOCK_SIZE != (1ULL << VMDEFRAG_BLOCK_SHIFT));
	if (pageblock_nr_pages != VDF_BLOCK_PAGES)
		return -EOPNOTSUPP;

	ret = vdf_slabcal_init();
	if (ret)
		pr_info("slab cache names unavailable (%d), reporting \"?\"\n", ret);

	ret = vdf_capture_init();
	if (ret)
		return ret;
	ret = vdf_genl_init();
	if (ret)
		goto out_capture_exit;
	ret = vdf_pressure_init();
	if (ret)
		goto out_genl_exit;

	/* best effort: debugfs errors are not ours to handle */
	vdf_debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("work", 0400, vdf_debugfs, NULL, &vdf_work_fops);
	vdf_evict_debugfs(vdf_debugfs);

	pr_info("loaded, floor %llu MiB\n", vdf_pressure_floor_bytes() >> 20);
	return 0;

out_genl_exit:
	vdf_genl_exit();
out_capture_exit:
	vdf_capture_exit();
	return ret;
}

static void __exit vdf_exit(void)
{
	debugfs_remove_recursive(vdf_debugfs);
	vdf_pressure_exit();
	vdf_capture_release_all();
	vdf_genl_exit();
	vdf_capture_exit();
	pr_info("unloaded\n");
}

module_init(vdf_init);
module_exit(vdf_exit);

MODULE_DESCRIPTION("vmdefrag: empty and capture 2 MiB guest memory blocks for the host");
MODULE_AUTHOR("vmdefrag developers");
MODULE_LICENSE("GPL");
