// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag slab calibration: naming the slab cache that owns a page.
 *
 * SCAN reports the slab pages that pin unmovable blocks by cache name.  The
 * way from a page to its cache name goes through struct slab (which overlays
 * the head struct page) and struct kmem_cache, and both are private to mm/:
 * their layouts depend on the kernel version and configuration, and 6.12's
 * struct kmem_cache is not in any public header at all.  This file therefore
 * never uses their layouts.  It measures them instead, once, at load:
 *
 *   calibrate  create a cache of our own with a known, unique name (with a
 *              constructor, so SLUB cannot merge it into another cache and
 *              hand us an alias), allocate one object, and search
 *              - the first 64 bytes of the object's head struct page for the
 *                word equal to the cache's address (slab->slab_cache), and
 *              - the first 256 bytes of the kmem_cache for the first
 *                pointer to a string equal to the name (kmem_cache->name;
 *                the embedded sysfs kobject, further on, holds a copy of
 *                the name that must not be taken: for a merged cache it is
 *                an alias like ":0000064");
 *              the cache pointer must match exactly once.  Do it for two
 *              caches of different sizes and names; the offsets must agree.
 *   use        for a page the scanner found PageSlab, read the cache pointer
 *              at the page offset, and (once per distinct cache, when the
 *              report is built) the name pointer at the name offset and the
 *              name itself, always with copy_from_kernel_nofault(): the scan
 *              is racy, a slab may be freed under us and the pointer stale.
 *              Names are sanitized to printable ASCII.
 *   degrade    if calibration fails, every slab page is reported under the
 *              name "?", still counted as cause "slab".  Nothing else
 *              depends on the calibration, and nothing can crash on it.
 *
 * State: the two offsets, written by vdf_slabcal_init() before the netlink
 * family is registered and only read afterwards, so they need no lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "vmdefrag.h"

#define VDF_CAL_PAGE_BYTES	64
#define VDF_CAL_CACHE_BYTES	256

/* Byte offsets found by calibration; -1 while unknown. */
static int vdf_slabcal_page_off = -1;	/* of the cache pointer in struct page */
static int vdf_slabcal_name_off = -1;	/* of the name pointer in kmem_cache */
/* ext4's inode cache was named once: ext4 is loaded (evict.c may use it) */
static bool vdf_slabcal_ext4;

/* A constructor keeps SLUB from merging the calibration caches. */
static void vdf_slabcal_ctor(void *obj)
{
}

/*
 * Copy a NUL-terminated kernel string at @addr into @buf (at most @len - 1
 * characters, always terminated), page by page so that a string near the end
 * of a mapping cannot fault the whole copy.  Returns 0 or -EFAULT.
 */
static int vdf_slabcal_read_str(unsigned long addr, char *buf, size_t len)
{
	size_t n = 0;

	if (!addr || !virt_addr_valid((void *)addr))
		return -EFAULT;
	while (n < len - 1) {
		size_t chunk = min_t(size_t, len - 1 - n,
				     PAGE_SIZE - offset_in_page(addr + n));

		if (copy_from_kernel_nofault(buf + n, (void *)(addr + n), chunk))
			return -EFAULT;
		if (memchr(buf + n, '\0', chunk))
			return 0;
		n += chunk;
	}
	buf[len - 1] = '\0';
	return 0;
}

/* Find the offsets for one cache; 0 with both ret_* set, or -errno. */
static int vdf_slabcal_probe(const char *name, unsigned int size,
			     int *ret_page_off, int *ret_name_off)
{
	unsigned long words[VDF_CAL_PAGE_BYTES / sizeof(unsigned long)];
	char buf[VMDEFRAG_SLAB_NAME_LEN];
	int page_off = -1, name_off = -1;
	struct kmem_cache *cache;
	struct page *head;
	unsigned int i;
	void *obj;
	int ret = 0;

	BUILD_BUG_ON(sizeof(struct page) < VDF_CAL_PAGE_BYTES);
	BUILD_BUG_ON(sizeof("vmdefrag_cal_x") > VMDEFRAG_SLAB_NAME_LEN);

	cache = kmem_cache_create(name, size, 0, 0, vdf_slabcal_ctor);
	if (!cache)
		return -ENOMEM;
	obj = kmem_cache_alloc(cache, GFP_KERNEL);
	if (!obj) {
		ret = -ENOMEM;
		goto out_destroy;
	}

	head = virt_to_head_page(obj);
	if (!PageSlab(head)) {
		ret = -ENOENT;
		goto out_free_obj;
	}
	memcpy(words, head, sizeof(words));
	for (i = 0; i < ARRAY_SIZE(words); i++) {
		if (words[i] != (unsigned long)cache)
			continue;
		if (page_off >= 0) {
			ret = -EEXIST;
			goto out_free_obj;
		}
		page_off = i * sizeof(unsigned long);
	}

	for (i = 0; i < VDF_CAL_CACHE_BYTES; i += sizeof(unsigned long)) {
		unsigned long ptr;

		if (copy_from_kernel_nofault(&ptr, (char *)cache + i, sizeof(ptr)))
			break;
		if (vdf_slabcal_read_str(ptr, buf, sizeof(buf)) || strcmp(buf, name))
			continue;
		/* the first match: the sysfs kobject's copy of the name follows */
		name_off = i;
		break;
	}

	if (page_off < 0 || name_off < 0) {
		ret = -ENOENT;
		goto out_free_obj;
	}
	*ret_page_off = page_off;
	*ret_name_off = name_off;

out_free_obj:
	kmem_cache_free(cache, obj);
out_destroy:
	kmem_cache_destroy(cache);
	return ret;
}

/*
 * Calibrate; returns 0 or the reason it failed.  A failure is not fatal for
 * the module: the caller logs it and slab pages are reported as "?".
 */
int vdf_slabcal_init(void)
{
	int page_a, name_a, page_b, name_b;
	int ret;

	ret = vdf_slabcal_probe("vmdefrag_cal_a", 72, &page_a, &name_a);
	if (ret)
		return ret;
	ret = vdf_slabcal_probe("vmdefrag_cal_b", 712, &page_b, &name_b);
	if (ret)
		return ret;
	if (page_a != page_b || name_a != name_b)
		return -EINVAL;

	vdf_slabcal_page_off = page_a;
	vdf_slabcal_name_off = name_a;
	return 0;
}

/*
 * The kmem_cache address of a slab head page, or 0 if unknown.  Racy by
 * design: the caller saw PageSlab(head) a moment ago and the value is only
 * used as a tally key and for nofault reads.
 */
unsigned long vdf_slabcal_cache_of(struct page *head)
{
	unsigned long cache;

	if (vdf_slabcal_page_off < 0)
		return 0;
	cache = READ_ONCE(*(unsigned long *)((char *)head + vdf_slabcal_page_off));
	if (!cache || !virt_addr_valid((void *)cache))
		return 0;
	return cache;
}

/*
 * The caches whose objects evict.c knows how to free through their owners.
 * ext4's inode cache is the one filesystem inode cache: eviction walks the
 * superblocks of ext4 only (see evict.c); ext4's extent status entries
 * belong to their inode and go with it or through ext4's es shrinker.
 * Their cache is "ext4_extent_status" in 6.1 and "extent_status" since
 * ext4 made it with KMEM_CACHE() (6.12).
 */
static const struct {
	const char *name;
	enum vdf_slab_kind kind;
} vdf_slabcal_kinds[] = {
	{ "dentry", VDF_SLAB_KIND_DENTRY },
	{ "ext4_inode_cache", VDF_SLAB_KIND_INODE },
	{ "ext4_extent_status", VDF_SLAB_KIND_INODE_PART },
	{ "extent_status", VDF_SLAB_KIND_INODE_PART },
	{ "radix_tree_node", VDF_SLAB_KIND_XA_NODE },
	{ "buffer_head", VDF_SLAB_KIND_BH },
};

/*
 * What eviction can do with the objects of the cache at @cache, by its
 * name; with VDF_SLAB_KIND_OTHER for anything unknown or unreadable.  For a
 * known kind, *@ret_size (optional) gets the object size, read through the
 * exported kmem_cache_size(): these caches live as long as the kernel (ext4's
 * as long as ext4 is loaded, which its name in a slab page just showed).
 */
enum vdf_slab_kind vdf_slabcal_kind(unsigned long cache, unsigned int *ret_size)
{
	char name[VMDEFRAG_SLAB_NAME_LEN];
	unsigned int i;

	if (!cache || cache == VDF_SLAB_OVERFLOW)
		return VDF_SLAB_KIND_OTHER;
	vdf_slabcal_name(cache, name, sizeof(name));
	for (i = 0; i < ARRAY_SIZE(vdf_slabcal_kinds); i++) {
		if (strcmp(name, vdf_slabcal_kinds[i].name))
			continue;
		if (ret_size)
			*ret_size = kmem_cache_size((struct kmem_cache *)cache);
		if (vdf_slabcal_kinds[i].kind == VDF_SLAB_KIND_INODE)
			WRITE_ONCE(vdf_slabcal_ext4, true);
		return vdf_slabcal_kinds[i].kind;
	}
	return VDF_SLAB_KIND_OTHER;
}

/*
 * Whether a scan ever met ext4's inode cache, i.e. ext4 is (or was) loaded:
 * eviction then asks for the ext4 type, which must never load the module.
 */
bool vdf_slabcal_seen_ext4(void)
{
	return READ_ONCE(vdf_slabcal_ext4);
}

/* The name of the cache at @cache, sanitized, or "?" if it cannot be read. */
void vdf_slabcal_name(unsigned long cache, char *buf, size_t len)
{
	unsigned long name;
	size_t i;

	if (cache == VDF_SLAB_OVERFLOW) {
		strscpy(buf, "(other)", len);
		return;
	}
	if (!cache || vdf_slabcal_name_off < 0 ||
	    copy_from_kernel_nofault(&name, (char *)cache + vdf_slabcal_name_off,
				     sizeof(name)) ||
	    vdf_slabcal_read_str(name, buf, len) || !buf[0]) {
		strscpy(buf, "?", len);
		return;
	}
	for (i = 0; buf[i]; i++)
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			buf[i] = '?';
}
