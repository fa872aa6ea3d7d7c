// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag pressure: the safety floor, the shrinker and the OOM notifier.
 *
 * Captured memory must never starve the guest.  Three lines of defence:
 *
 *   floor      capture.c takes a block only while the memory free above
 *              the zones' high watermarks stays at or above the floor after
 *              taking it (vdf_pressure_headroom()).  The floor is module-
 *              wide: floor_mb at load (0: max(128 MiB, 5% of RAM)), changed
 *              by the SET command; a CAPTURE may raise it for itself.  Kept
 *              above the high watermarks, it means a capture alone never
 *              wakes kswapd.
 *   shrinker   when the guest allocates past the floor anyway, reclaim runs
 *              and calls our shrinker, which releases captured blocks before
 *              the guest has to give up its own caches.  It reports at most
 *              VDF_SHRINK_CHUNK pages as freeable and has seeks = 0 ("free
 *              to recreate"), so each reclaim pass gets about half of that:
 *              a steady 16 MiB per pass rather than everything at once.
 *   OOM        last resort: the OOM notifier releases up to
 *              VDF_OOM_BLOCKS blocks; a non-zero release spares the guest
 *              an OOM kill.
 *
 * Both callbacks release through vdf_capture_release_some(), which skips
 * blocks in the PENDING handshake state (see capture.c), takes no
 * mutex (see capture.c for the ownership rule), never sleeps, and sends
 * EVENT_RELEASED with the reason.  Both are counted in the statistics.
 *
 * Locking: vdf_pressure_floor is a u64 read and written with READ_ONCE() /
 * WRITE_ONCE() (single-copy atomic on 64-bit); nothing else is shared.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/nodemask.h>
#include <linux/oom.h>
#include <linux/shrinker.h>
#include <linux/vmstat.h>

#include "compat.h"
#include "vmdefrag.h"

#define VDF_FLOOR_DEFAULT_MIN	(128ULL << 20)
#define VDF_FLOOR_MIN		(16ULL << 20)
#define VDF_SHRINK_CHUNK	(16 * VDF_BLOCK_PAGES)
#define VDF_OOM_BLOCKS		32

static unsigned int floor_mb;
module_param(floor_mb, uint, 0444);
MODULE_PARM_DESC(floor_mb,
		 "Memory kept free above the watermarks, MiB (0: max(128 MiB, 5% of RAM))");

static u64 vdf_pressure_floor;
static struct shrinker *vdf_pressure_shrinker;

u64 vdf_pressure_floor_bytes(void)
{
	return READ_ONCE(vdf_pressure_floor);
}

/* SET: change the module-wide floor; 0 or -EINVAL below VDF_FLOOR_MIN. */
int vdf_pressure_set_floor(u64 bytes, struct netlink_ext_ack *extack)
{
	if (bytes < VDF_FLOOR_MIN) {
		NL_SET_ERR_MSG_MOD(extack, "floor below 16 MiB");
		return -EINVAL;
	}
	WRITE_ONCE(vdf_pressure_floor, bytes);
	return 0;
}

/*
 * Pages free above the high watermarks of all zones, minus @floor_bytes;
 * negative when below the floor.  A racy sum, good for a decision per block.
 */
long vdf_pressure_headroom(u64 floor_bytes)
{
	long free = global_zone_page_state(NR_FREE_PAGES);
	int nid, z;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (populated_zone(zone))
				free -= high_wmark_pages(zone);
		}
	}
	return free - (long)min_t(u64, floor_bytes >> PAGE_SHIFT, LONG_MAX / 2);
}

static unsigned long vdf_pressure_count(struct shrinker *s,
					struct shrink_control *sc)
{
	unsigned long nr = vdf_capture_count(), pending = vdf_capture_pending();

	/* PENDING blocks are the host's until it acknowledges them */
	return min((nr > pending ? nr - pending : 0) * VDF_BLOCK_PAGES,
		   VDF_SHRINK_CHUNK);
}

static unsigned long vdf_pressure_scan(struct shrinker *s,
				       struct shrink_control *sc)
{
	unsigned long want = DIV_ROUND_UP(sc->nr_to_scan, VDF_BLOCK_PAGES);
	unsigned long done;

	done = vdf_capture_release_some(want, VMDEFRAG_RELEASE_SHRINKER);
	if (!done)
		return SHRINK_STOP;
	vdf_stat_add(VDF_STAT_PRESSURE_RELEASES, done);
	pr_info_ratelimited("memory pressure: released %lu blocks\n", done);
	sc->nr_scanned = done * VDF_BLOCK_PAGES;
	return done * VDF_BLOCK_PAGES;
}

static int vdf_pressure_oom(struct notifier_block *nb, unsigned long unused,
			    void *parm)
{
	unsigned long *freed = parm;
	unsigned long done;

	done = vdf_capture_release_some(VDF_OOM_BLOCKS, VMDEFRAG_RELEASE_OOM);
	if (done) {
		vdf_stat_add(VDF_STAT_OOM_RELEASES, done);
		*freed += done * VDF_BLOCK_PAGES;
		pr_warn_ratelimited("out of memory: released %lu blocks\n", done);
	}
	return NOTIFY_OK;
}

static struct notifier_block vdf_pressure_oom_nb = {
	.notifier_call = vdf_pressure_oom,
};

int vdf_pressure_init(void)
{
	u64 ram = (u64)totalram_pages() << PAGE_SHIFT;
	int ret;

	if (floor_mb)
		vdf_pressure_floor = max_t(u64, (u64)floor_mb << 20, VDF_FLOOR_MIN);
	else
		vdf_pressure_floor = max_t(u64, VDF_FLOOR_DEFAULT_MIN, div_u64(ram, 20));

	vdf_pressure_shrinker = vdf_compat_shrinker_create("vmdefrag",
							   vdf_pressure_count,
							   vdf_pressure_scan, 0);
	if (IS_ERR(vdf_pressure_shrinker))
		return PTR_ERR(vdf_pressure_shrinker);
	ret = register_oom_notifier(&vdf_pressure_oom_nb);
	if (ret)
		goto out_destroy_shrinker;
	return 0;

out_destroy_shrinker:
	vdf_compat_shrinker_destroy(vdf_pressure_shrinker);
	return ret;
}

/* Stop both callbacks; returns after any running one has finished. */
void vdf_pressure_exit(void)
{
	unregister_oom_notifier(&vdf_pressure_oom_nb);
	vdf_compat_shrinker_destroy(vdf_pressure_shrinker);
}
