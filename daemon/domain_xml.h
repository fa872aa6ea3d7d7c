/* SPDX-License-Identifier: GPL-2.0 */
/*
 * domain_xml.h - what vmdefrag needs to know from a libvirt domain's XML,
 * and what such a domain lacks for it (prefix domain_xml_).
 *
 * Shared by vmdefragd's libvirt mode (where is the VM's channel socket,
 * which backend can its RAM use) and `vmdefragctl check-domain`.  The XML
 * is untrusted input: bounded by DOMAIN_XML_MAX, parsed without network,
 * DTDs or entity substitution.
 */
#ifndef VDF_DOMAIN_XML_H
#define VDF_DOMAIN_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOMAIN_XML_MAX		(4u << 20)	/* bytes of XML accepted */
#define DOMAIN_XML_CHANNEL	"org.vmdefrag.0"
#define DOMAIN_XML_NAME_MAX	256	/* libvirt allows long names */
#define DOMAIN_XML_PATH_MAX	108	/* sizeof(sockaddr_un.sun_path) */
#define DOMAIN_XML_LACKS_MAX	8	/* more than domain_xml_lacks() yields */

enum domain_xml_source {
	DOMAIN_XML_SOURCE_DEFAULT,	/* no <source>: anonymous (or hugetlbfs) */
	DOMAIN_XML_SOURCE_ANONYMOUS,
	DOMAIN_XML_SOURCE_MEMFD,
	DOMAIN_XML_SOURCE_FILE,
};

struct domain_xml {
	char type[16];			/* <domain type=>: "kvm", "qemu", ... */
	char name[DOMAIN_XML_NAME_MAX];
	char uuid[40];			/* "" if absent */
	uint64_t memory_bytes;		/* <memory>, 0 if absent */

	/* the virtio channel whose target name is DOMAIN_XML_CHANNEL */
	bool channel;			/* present at all */
	char channel_type[16];		/* <channel type=>: "unix", "pty", ... */
	bool channel_bind;		/* <source mode='bind'> (or no mode) */
	char channel_path[DOMAIN_XML_PATH_MAX];	/* "" until libvirt assigns one */
	bool channel_connected;		/* live XML: target state='connected' */

	/* guest RAM (<memoryBacking>, NUMA cells' memAccess) */
	enum domain_xml_source mem_source;
	bool mem_shared;		/* access mode='shared' for all of RAM */
	bool mem_hugepages;		/* <hugepages/> */

	/* <memballoon> */
	char balloon_model[16];		/* "" when there is no element */
	bool balloon_fpr;		/* freePageReporting='on' */
};

/*
 * Parses len bytes of domain XML into *ret.  On failure returns -EINVAL
 * (not well-formed, not a <domain>, a DTD, a value too long for its
 * field) or -EFBIG (len > DOMAIN_XML_MAX) with one line in err, and *ret
 * untouched.  err may be NULL.
 */
int domain_xml_parse(const char *xml, size_t len, struct domain_xml *ret,
		     char *err, size_t errsz);

/* What a missing piece stops. */
enum domain_xml_blocks {
	DOMAIN_XML_BLOCKS_ALL,		/* vmdefrag cannot work at all */
	DOMAIN_XML_BLOCKS_SHARED,	/* no shared backend (reclaim by punching) */
	DOMAIN_XML_BLOCKS_HINT,		/* no hint backend (free page reporting) */
};

struct domain_xml_lack {
	enum domain_xml_blocks blocks;
	char text[320];			/* one line, plain words, no newline */
};

/*
 * Fills ret[0..n) with what d lacks for vmdefrag, most serious first,
 * and returns n (0: it has everything).  At most max entries are written;
 * DOMAIN_XML_LACKS_MAX is always enough.
 */
size_t domain_xml_lacks(const struct domain_xml *d,
			struct domain_xml_lack *ret, size_t max);

/*
 * One line saying what vmdefrag can do with d as a whole: "uses the shared
 * backend", "hint backend only", "cannot work".
 */
const char *domain_xml_verdict(const struct domain_xml *d);

/* True if d's RAM can use the shared backend (memfd/file, shared). */
bool domain_xml_shared_ok(const struct domain_xml *d);

/* True if d's RAM can use the hint backend (virtio balloon with FPR). */
bool domain_xml_hint_ok(const struct domain_xml *d);

/* True if d has a usable channel (unix socket, libvirt listening). */
bool domain_xml_channel_ok(const struct domain_xml *d);

#endif /* VDF_DOMAIN_XML_H */
