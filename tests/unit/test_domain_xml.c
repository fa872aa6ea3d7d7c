// SPDX-License-Identifier: GPL-2.0
/*
 * test_domain_xml.c - reading libvirt domain XML (daemon/domain_xml.c),
 * table-driven: each sample domain (the good one is what
 * configs/libvirt/domain-snippet.xml produces, the others each miss or
 * spoil one piece) with the facts parsed from it and what it lacks, tagged
 * by what that blocks; then hostile inputs (malformed, over the size cap,
 * DOCTYPE/entities, overlong values) that must fail with an error line and
 * leave the output untouched.  The shipped snippet itself is checked by
 * tests/integration/test_install.py (vmdefragctl check-domain --xml).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain_xml.h"

#define HEAD	"<domain type='kvm'><name>vm1</name>" \
		"<uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>" \
		"<memory unit='MiB'>512</memory>"
#define SHARED	"<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
#define CHAN	"<channel type='unix'><source mode='bind' path='/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0'/>" \
		"<target type='virtio' name='org.vmdefrag.0' state='connected'/></channel>"
#define BALLOON	"<memballoon model='virtio' freePageReporting='on'/>"

struct dx_case {
	const char *what;
	const char *xml;
	/* expected facts */
	bool channel_ok, shared_ok, hint_ok;
	const char *channel_path;
	/* expected lacks, in order, by what they block and a word they say */
	size_t nlacks;
	struct {
		enum domain_xml_blocks blocks;
		const char *says;
	} lacks[3];
};

static const struct dx_case dx_cases[] = {
	{ "good (the snippet merged)",
	  HEAD SHARED "<devices>" CHAN BALLOON "</devices></domain>",
	  true, true, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 0, { } },
	{ "inactive XML: channel without a path yet",
	  HEAD SHARED "<devices><channel type='unix'><source mode='bind'/>"
	  "<target type='virtio' name='org.vmdefrag.0'/></channel>" BALLOON
	  "</devices></domain>",
	  true, true, true, "", 0, { } },
	{ "missing channel",
	  HEAD SHARED "<devices><channel type='unix'><source mode='bind'/>"
	  "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
	  BALLOON "</devices></domain>",
	  false, true, true, "", 1,
	  { { DOMAIN_XML_BLOCKS_ALL, "no virtio channel named org.vmdefrag.0" } } },
	{ "pty channel",
	  HEAD SHARED "<devices><channel type='pty'>"
	  "<target type='virtio' name='org.vmdefrag.0'/></channel>" BALLOON
	  "</devices></domain>",
	  false, true, true, "", 1,
	  { { DOMAIN_XML_BLOCKS_ALL, "is type 'pty', not 'unix'" } } },
	{ "connect-mode channel",
	  HEAD SHARED "<devices><channel type='unix'><source mode='connect' path='/tmp/x'/>"
	  "<target type='virtio' name='org.vmdefrag.0'/></channel>" BALLOON
	  "</devices></domain>",
	  false, true, true, "/tmp/x", 1,
	  { { DOMAIN_XML_BLOCKS_ALL, "mode='bind'" } } },
	{ "anonymous RAM",
	  HEAD "<devices>" CHAN BALLOON "</devices></domain>",
	  true, false, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_SHARED,
	      "guest RAM is private anonymous memory: reclaim uses only the hint backend" } } },
	{ "shared anonymous RAM (no file to punch)",
	  HEAD "<memoryBacking><source type='anonymous'/><access mode='shared'/></memoryBacking>"
	  "<devices>" CHAN BALLOON "</devices></domain>",
	  true, false, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_SHARED, "guest RAM is shared anonymous memory" } } },
	{ "hugepages, shared (hugetlbfs file)",
	  HEAD "<memoryBacking><hugepages/><access mode='shared'/></memoryBacking>"
	  "<devices>" CHAN BALLOON "</devices></domain>",
	  true, true, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 0, { } },
	{ "hugepages, private",
	  HEAD "<memoryBacking><hugepages/></memoryBacking>"
	  "<devices>" CHAN BALLOON "</devices></domain>",
	  true, false, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_SHARED, "guest RAM is in hugetlbfs but private" } } },
	{ "memfd, not shared",
	  HEAD "<memoryBacking><source type='memfd'/></memoryBacking><devices>"
	  CHAN BALLOON "</devices></domain>",
	  true, false, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_SHARED, "<access mode='shared'/>" } } },
	{ "shared through NUMA cells",
	  HEAD "<memoryBacking><source type='memfd'/></memoryBacking>"
	  "<cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB' memAccess='shared'/></numa></cpu>"
	  "<devices>" CHAN BALLOON "</devices></domain>",
	  true, true, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 0, { } },
	{ "shared, but one NUMA cell private",
	  HEAD SHARED
	  "<cpu><numa><cell id='0' memory='256' unit='MiB'/><cell id='1' memory='256' unit='MiB' memAccess='private'/></numa></cpu>"
	  "<devices>" CHAN BALLOON "</devices></domain>",
	  true, false, true, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_SHARED, "private to QEMU" } } },
	{ "no balloon",
	  HEAD SHARED "<devices>" CHAN "</devices></domain>",
	  true, true, false, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_HINT, "no balloon device" } } },
	{ "balloon model none",
	  HEAD SHARED "<devices>" CHAN "<memballoon model='none'/></devices></domain>",
	  true, true, false, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_HINT, "balloon model is 'none'" } } },
	{ "balloon without free page reporting",
	  HEAD SHARED "<devices>" CHAN "<memballoon model='virtio'/></devices></domain>",
	  true, true, false, "/run/libvirt/qemu/channel/1-vm1/org.vmdefrag.0", 1,
	  { { DOMAIN_XML_BLOCKS_HINT, "balloon has free page reporting off" } } },
	{ "nothing at all",
	  HEAD "</domain>",
	  false, false, false, "", 3,
	  { { DOMAIN_XML_BLOCKS_ALL, "no virtio channel" },
	    { DOMAIN_XML_BLOCKS_SHARED, "the host cannot punch" },
	    { DOMAIN_XML_BLOCKS_HINT, "no balloon device" } } },
};

static void test_domain_xml_table(void **state)
{
	for (size_t i = 0; i < sizeof(dx_cases) / sizeof(dx_cases[0]); i++) {
		const struct dx_case *c = &dx_cases[i];
		struct domain_xml_lack lacks[DOMAIN_XML_LACKS_MAX];
		struct domain_xml d;
		char err[256] = "x";
		size_t n;
		int r;

		r = domain_xml_parse(c->xml, strlen(c->xml), &d, err, sizeof(err));
		if (r != 0)
			fail_msg("%s: parse %d: %s", c->what, r, err);
		assert_string_equal(err, "");
		assert_string_equal(d.name, "vm1");
		assert_string_equal(d.type, "kvm");
		assert_string_equal(d.uuid, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
		assert_int_equal(d.memory_bytes, 512ull << 20);
		assert_string_equal(d.channel_path, c->channel_path);
		if (domain_xml_channel_ok(&d) != c->channel_ok ||
		    domain_xml_shared_ok(&d) != c->shared_ok ||
		    domain_xml_hint_ok(&d) != c->hint_ok)
			fail_msg("%s: channel %d shared %d hint %d", c->what,
				 domain_xml_channel_ok(&d), domain_xml_shared_ok(&d),
				 domain_xml_hint_ok(&d));

		n = domain_xml_lacks(&d, lacks, DOMAIN_XML_LACKS_MAX);
		if (n != c->nlacks)
			fail_msg("%s: %zu lacks, want %zu (first: %s)", c->what, n,
				 c->nlacks, n ? lacks[0].text : "-");
		for (size_t j = 0; j < n; j++) {
			assert_int_equal(lacks[j].blocks, c->lacks[j].blocks);
			if (!strstr(lacks[j].text, c->lacks[j].says))
				fail_msg("%s: '%s' does not say '%s'", c->what,
					 lacks[j].text, c->lacks[j].says);
			assert_null(strchr(lacks[j].text, '\n'));
		}
		/* a short array gets the most serious ones, never overrun */
		if (n > 1)
			assert_int_equal(domain_xml_lacks(&d, lacks, 1), 1);
		assert_non_null(domain_xml_verdict(&d));
	}
}

static void test_domain_xml_good_facts(void **state)
{
	const char *xml = HEAD SHARED "<devices>" CHAN BALLOON "</devices></domain>";
	struct domain_xml d;

	assert_int_equal(domain_xml_parse(xml, strlen(xml), &d, NULL, 0), 0);
	assert_true(d.channel);
	assert_true(d.channel_connected);
	assert_true(d.channel_bind);
	assert_string_equal(d.channel_type, "unix");
	assert_int_equal(d.mem_source, DOMAIN_XML_SOURCE_MEMFD);
	assert_true(d.mem_shared);
	assert_false(d.mem_hugepages);
	assert_string_equal(d.balloon_model, "virtio");
	assert_true(d.balloon_fpr);
	assert_string_equal(domain_xml_verdict(&d),
			    "vmdefrag uses the shared backend with this domain");
}

static void test_domain_xml_units(void **state)
{
	static const struct {
		const char *memory;
		uint64_t bytes;
	} u[] = {
		{ "<memory>1048576</memory>", 1ull << 30 },		/* KiB */
		{ "<memory unit='KiB'>4</memory>", 4096 },
		{ "<memory unit='b'>4096</memory>", 4096 },
		{ "<memory unit='bytes'>12</memory>", 12 },
		{ "<memory unit='M'>2</memory>", 2ull << 20 },
		{ "<memory unit='MB'>2</memory>", 2000000 },
		{ "<memory unit='GiB'>3</memory>", 3ull << 30 },
		{ "<memory unit='T'>1</memory>", 1ull << 40 },
		{ "<memory unit='k'> 8 </memory>", 8192 },
	};
	static const char *bad[] = {
		"<memory unit='MiB'>-1</memory>",
		"<memory unit='MiB'>1.5</memory>",
		"<memory unit='XiB'>1</memory>",
		"<memory unit='Mx'>1</memory>",
		"<memory unit='EiB'>100</memory>",
		"<memory>99999999999999999999999</memory>",
		"<memory></memory>",
	};
	char xml[512], err[256];
	struct domain_xml d;

	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
		snprintf(xml, sizeof(xml), "<domain><name>a</name>%s</domain>", u[i].memory);
		if (domain_xml_parse(xml, strlen(xml), &d, err, sizeof(err)) != 0)
			fail_msg("%s: %s", u[i].memory, err);
		assert_int_equal(d.memory_bytes, u[i].bytes);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(xml, sizeof(xml), "<domain><name>a</name>%s</domain>", bad[i]);
		if (domain_xml_parse(xml, strlen(xml), &d, err, sizeof(err)) != -EINVAL)
			fail_msg("%s parsed", bad[i]);
		assert_non_null(strstr(err, "<memory>"));
	}
}

struct dx_bad {
	const char *what;
	const char *xml;
	int ret;
	const char *says;
};

static void test_domain_xml_hostile(void **state)
{
	static char longname[600], longpath[400];
	static const struct dx_bad bad[] = {
		{ "malformed", "<domain><name>vm1</name><devices>", -EINVAL, "not well-formed" },
		{ "garbage", "\x01\x02 not xml", -EINVAL, "not well-formed" },
		{ "not a domain", "<network><name>x</name></network>", -EINVAL, "not <domain>" },
		{ "no name", "<domain type='kvm'></domain>", -EINVAL, "no <name>" },
		{ "doctype", "<!DOCTYPE domain [<!ENTITY a 'aaaa'>]><domain><name>&a;</name></domain>",
		  -EINVAL, "DOCTYPE" },
		{ "external entity",
		  "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain><name>&x;</name></domain>",
		  -EINVAL, "DOCTYPE" },
		{ "undeclared entity", "<domain><name>&a;</name></domain>", -EINVAL, "not well-formed" },
		{ "long name", longname, -EINVAL, "<name> longer" },
		{ "long channel path", longpath, -EINVAL, "socket path longer" },
		{ "long type", "<domain type='0123456789abcdefXYZ'><name>a</name></domain>",
		  -EINVAL, "<domain type> too long" },
		{ "empty", "", -EINVAL, "empty" },
	};
	struct domain_xml d, orig;
	char err[256];

	snprintf(longname, sizeof(longname), "<domain><name>%0*d</name></domain>", 300, 0);
	snprintf(longpath, sizeof(longpath),
		 "<domain><name>a</name><devices><channel type='unix'><source mode='bind' path='/%0*d'/>"
		 "<target type='virtio' name='org.vmdefrag.0'/></channel></devices></domain>", 200, 0);
	memset(&orig, 0x5a, sizeof(orig));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		d = orig;
		err[0] = '\0';
		r = domain_xml_parse(bad[i].xml, strlen(bad[i].xml), &d, err, sizeof(err));
		if (r != bad[i].ret || !strstr(err, bad[i].says))
			fail_msg("%s: %d '%s', want %d '%s'", bad[i].what, r, err,
				 bad[i].ret, bad[i].says);
		assert_null(strchr(err, '\n'));
		assert_memory_equal(&d, &orig, sizeof(d));	/* untouched */
	}
	assert_int_equal(domain_xml_parse(NULL, 5, &d, NULL, 0), -EINVAL);
}

/* Over the cap: refused before parsing; deep nesting: libxml2's limit. */
static void test_domain_xml_huge(void **state)
{
	size_t len = DOMAIN_XML_MAX + 1, off = 0;
	struct domain_xml d;
	char err[256];
	char *xml = malloc(len + 1);

	assert_non_null(xml);
	off += (size_t)sprintf(xml, "<domain><name>a</name><description>");
	memset(xml + off, 'x', len - off);
	memcpy(xml + len - strlen("</description></domain>"), "</description></domain>",
	       strlen("</description></domain>"));
	xml[len] = '\0';
	assert_int_equal(domain_xml_parse(xml, len, &d, err, sizeof(err)), -EFBIG);
	assert_non_null(strstr(err, "limit"));
	/* one byte less is parsed */
	memmove(xml + off, xml + off + 1, len - off);
	assert_int_equal(domain_xml_parse(xml, len - 1, &d, err, sizeof(err)), 0);
	free(xml);

	/* 100000 nested elements: refused by the parser, no stack blowup */
	{
		const size_t depth = 100000;
		size_t sz = 64 + depth * 7, o = 0;
		char *deep = malloc(sz);

		assert_non_null(deep);
		o += (size_t)sprintf(deep, "<domain><name>a</name>");
		for (size_t i = 0; i < depth; i++)
			o += (size_t)sprintf(deep + o, "<a>");
		for (size_t i = 0; i < depth; i++)
			o += (size_t)sprintf(deep + o, "</a>");
		o += (size_t)sprintf(deep + o, "</domain>");
		assert_true(o < sz);
		assert_int_equal(domain_xml_parse(deep, o, &d, err, sizeof(err)), -EINVAL);
		free(deep);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_domain_xml_table),
		cmocka_unit_test(test_domain_xml_good_facts),
		cmocka_unit_test(test_domain_xml_units),
		cmocka_unit_test(test_domain_xml_hostile),
		cmocka_unit_test(test_domain_xml_huge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
