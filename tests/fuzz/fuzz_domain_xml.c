/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fuzz_domain_xml.c - libFuzzer target for the domain XML reader
 * (daemon/domain_xml.c).
 *
 * The input is a domain's XML as vmdefragd's libvirt mode receives it
 * from libvirtd or `vmdefragctl check-domain --xml` reads it from a file.
 * Whatever it is, domain_xml_parse() either fails with one line of error
 * text and leaves the output untouched, or fills a structure whose strings
 * are terminated inside their fields; domain_xml_lacks() then never yields
 * more than DOMAIN_XML_LACKS_MAX lines, each terminated.  Any other outcome
 * aborts.  The seed corpus is configs/libvirt/domain-snippet.xml merged
 * into a minimal domain, plus a few hand-written edge cases (see the
 * Makefile's corpus target).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domain_xml.h"

static void fuzz_check_str(const char *s, size_t size)
{
	if (!memchr(s, '\0', size))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct domain_xml_lack lacks[DOMAIN_XML_LACKS_MAX];
	struct domain_xml d, before;
	char err[256];
	size_t n;
	int r;

	memset(&d, 0xa5, sizeof(d));
	before = d;
	err[0] = '\0';
	r = domain_xml_parse((const char *)data, size, &d, err, sizeof(err));
	if (r < 0) {
		if (r != -EINVAL && r != -EFBIG && r != -ENOMEM)
			abort();
		if (memcmp(&d, &before, sizeof(d)) != 0 || !err[0])
			abort();
		fuzz_check_str(err, sizeof(err));
		return 0;
	}
	fuzz_check_str(d.type, sizeof(d.type));
	fuzz_check_str(d.name, sizeof(d.name));
	fuzz_check_str(d.uuid, sizeof(d.uuid));
	fuzz_check_str(d.channel_type, sizeof(d.channel_type));
	fuzz_check_str(d.channel_path, sizeof(d.channel_path));
	fuzz_check_str(d.balloon_model, sizeof(d.balloon_model));
	n = domain_xml_lacks(&d, lacks, DOMAIN_XML_LACKS_MAX);
	if (n > DOMAIN_XML_LACKS_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		fuzz_check_str(lacks[i].text, sizeof(lacks[i].text));
	(void)domain_xml_verdict(&d);
	return 0;
}
