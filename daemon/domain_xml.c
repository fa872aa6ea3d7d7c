// SPDX-License-Identifier: GPL-2.0
/*
 * domain_xml.c - reading a libvirt domain's XML for vmdefrag, and saying
 * what the domain lacks.
 *
 * Model: a domain is usable by vmdefrag when three independent things are
 * in its XML (configs/libvirt/domain-snippet.xml has all three):
 *
 *   channel  a virtio channel named org.vmdefrag.0 on a unix socket that
 *            QEMU listens on (<source mode='bind'>).  Without it nothing
 *            works: the daemon cannot reach the guest.
 *   shared   guest RAM in a memfd or file that QEMU maps shared
 *            (<memoryBacking><source type='memfd'/><access mode='shared'/>,
 *            or every NUMA cell memAccess='shared').  Without it the host
 *            cannot punch reclaimed ranges out of the backing.
 *   hint     a virtio balloon with freePageReporting='on'.  Without it the
 *            guest cannot hand emptied blocks back through QEMU.
 *
 * vmdefrag works with channel plus at least one of shared/hint; it
 * prefers shared.  domain_xml_parse() reduces the XML to struct domain_xml
 * (only the facts above plus name, uuid, type and memory size), and
 * domain_xml_lacks() turns a struct back into plain-words lines, each
 * tagged with what it blocks, each naming the element to add.
 *
 * The XML comes from libvirt, but a domain's XML is written by whoever may
 * define domains, and a file given to `vmdefragctl check-domain --xml` by
 * anyone: it is parsed as hostile.  Size is capped before parsing; a
 * DOCTYPE or ENTITY declaration is refused before libxml2 sees the buffer
 * (no entity expansion of any kind); libxml2 runs with XML_PARSE_NONET and
 * without XML_PARSE_HUGE, so its own depth and text-size limits hold; every
 * value is copied into a fixed field or refused when it does not fit.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "domain_xml.h"

/* What a parse failure says; never longer than one line. */
static void domain_xml_err(char *err, size_t errsz, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void domain_xml_err(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;
	char *nl;

	if (!err || errsz == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
	while ((nl = strpbrk(err, "\r\n")))
		*nl = ' ';
	for (size_t n = strlen(err); n > 0 && err[n - 1] == ' '; n--)
		err[n - 1] = '\0';
}

static bool domain_xml_is(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE &&
	       strcmp((const char *)n->name, name) == 0;
}

static const xmlNode *domain_xml_child(const xmlNode *parent, const char *name)
{
	for (const xmlNode *c = parent->children; c; c = c->next)
		if (domain_xml_is(c, name))
			return c;
	return NULL;
}

/*
 * Copies attribute attr of n (or, with attr NULL, n's text content) into
 * dst.  A missing value gives "".  -EINVAL when it does not fit.
 */
static int domain_xml_copy(const xmlNode *n, const char *attr, char *dst,
			   size_t dstsz)
{
	xmlChar *v;
	size_t len;

	v = attr ? xmlGetProp(n, (const xmlChar *)attr)
		 : xmlNodeGetContent(n);
	if (!v) {
		dst[0] = '\0';
		return 0;
	}
	len = strlen((const char *)v);
	if (len >= dstsz) {
		xmlFree(v);
		return -EINVAL;
	}
	memcpy(dst, v, len + 1);
	xmlFree(v);
	return 0;
}

/* Attribute attr of n equals want (false when absent). */
static bool domain_xml_attr_is(const xmlNode *n, const char *attr,
			       const char *want)
{
	xmlChar *v = xmlGetProp(n, (const xmlChar *)attr);
	bool eq = v && strcmp((const char *)v, want) == 0;

	xmlFree(v);
	return eq;
}

/*
 * libvirt's scaled integers: a decimal count and a unit, "KiB" when none
 * ("b"/"bytes"; "k", "KiB" = 1024; "KB" = 1000; likewise M G T P E).
 */
static int domain_xml_scaled(const char *num, const char *unit,
			     uint64_t *ret_bytes)
{
	static const char letters[] = "kmgtpe";
	uint64_t v = 0, scale = 1, base = 1024;
	const char *p;
	unsigned int i;

	while (isspace((unsigned char)*num))
		num++;
	if (!isdigit((unsigned char)*num))
		return -EINVAL;
	for (p = num; isdigit((unsigned char)*p); p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	while (isspace((unsigned char)*p))
		p++;
	if (*p)
		return -EINVAL;

	if (!unit || !*unit)
		unit = "KiB";
	if (strcasecmp(unit, "b") == 0 || strcasecmp(unit, "bytes") == 0) {
		*ret_bytes = v;
		return 0;
	}
	p = strchr(letters, tolower((unsigned char)unit[0]));
	if (!p || !unit[0])
		return -EINVAL;
	if (strcasecmp(unit + 1, "B") == 0)
		base = 1000;
	else if (unit[1] && strcmp(unit + 1, "iB") != 0)
		return -EINVAL;
	for (i = 0; i <= (unsigned int)(p - letters); i++) {
		if (scale > UINT64_MAX / base)
			return -ERANGE;
		scale *= base;
	}
	if (v > UINT64_MAX / scale)
		return -ERANGE;
	*ret_bytes = v * scale;
	return 0;
}

static int domain_xml_memory(const xmlNode *n, struct domain_xml *d,
			     char *err, size_t errsz)
{
	char num[32], unit[16];
	int r;

	if (domain_xml_copy(n, NULL, num, sizeof(num)) < 0 ||
	    domain_xml_copy(n, "unit", unit, sizeof(unit)) < 0) {
		domain_xml_err(err, errsz, "<memory> value too long");
		return -EINVAL;
	}
	r = domain_xml_scaled(num, unit, &d->memory_bytes);
	if (r < 0) {
		domain_xml_err(err, errsz, "<memory> is not a size: '%s' unit '%s'",
			       num, unit);
		return -EINVAL;
	}
	return 0;
}

/* <memoryBacking>: source type, access mode, hugepages. */
static void domain_xml_backing(const xmlNode *mb, struct domain_xml *d,
			       bool *ret_access_shared)
{
	const xmlNode *n;

	n = domain_xml_child(mb, "source");
	if (n) {
		if (domain_xml_attr_is(n, "type", "memfd"))
			d->mem_source = DOMAIN_XML_SOURCE_MEMFD;
		else if (domain_xml_attr_is(n, "type", "file"))
			d->mem_source = DOMAIN_XML_SOURCE_FILE;
		else if (domain_xml_attr_is(n, "type", "anonymous"))
			d->mem_source = DOMAIN_XML_SOURCE_ANONYMOUS;
	}
	n = domain_xml_child(mb, "access");
	*ret_access_shared = n && domain_xml_attr_is(n, "mode", "shared");
	d->mem_hugepages = domain_xml_child(mb, "hugepages") != NULL;
}

/*
 * <cpu><numa><cell memAccess=...>: a cell's memAccess overrides the
 * domain-wide access mode for that cell's RAM.
 */
static void domain_xml_numa(const xmlNode *cpu, unsigned int *ret_cells,
			    unsigned int *ret_shared, unsigned int *ret_private)
{
	const xmlNode *numa = domain_xml_child(cpu, "numa");

	if (!numa)
		return;
	for (const xmlNode *c = numa->children; c; c = c->next) {
		if (!domain_xml_is(c, "cell"))
			continue;
		(*ret_cells)++;
		if (domain_xml_attr_is(c, "memAccess", "shared"))
			(*ret_shared)++;
		else if (domain_xml_attr_is(c, "memAccess", "private"))
			(*ret_private)++;
	}
}

/* The first <channel> whose virtio target is DOMAIN_XML_CHANNEL. */
static int domain_xml_channel(const xmlNode *ch, struct domain_xml *d,
			      char *err, size_t errsz)
{
	const xmlNode *t = domain_xml_child(ch, "target");
	const xmlNode *src;

	if (d->channel || !t || !domain_xml_attr_is(t, "type", "virtio") ||
	    !domain_xml_attr_is(t, "name", DOMAIN_XML_CHANNEL))
		return 0;

	d->channel = true;
	d->channel_connected = domain_xml_attr_is(t, "state", "connected");
	if (domain_xml_copy(ch, "type", d->channel_type,
			    sizeof(d->channel_type)) < 0) {
		domain_xml_err(err, errsz, "<channel type> too long");
		return -EINVAL;
	}
	src = domain_xml_child(ch, "source");
	d->channel_bind = !src || domain_xml_attr_is(src, "mode", "bind") ||
			  !xmlHasProp(src, (const xmlChar *)"mode");
	if (src && domain_xml_copy(src, "path", d->channel_path,
				   sizeof(d->channel_path)) < 0) {
		domain_xml_err(err, errsz,
			       "channel %s socket path longer than %d bytes",
			       DOMAIN_XML_CHANNEL, DOMAIN_XML_PATH_MAX - 1);
		return -EINVAL;
	}
	return 0;
}

static int domain_xml_devices(const xmlNode *devs, struct domain_xml *d,
			      char *err, size_t errsz)
{
	bool balloon = false;
	int r;

	for (const xmlNode *c = devs->children; c; c = c->next) {
		if (domain_xml_is(c, "channel")) {
			r = domain_xml_channel(c, d, err, errsz);
			if (r < 0)
				return r;
		} else if (domain_xml_is(c, "memballoon") && !balloon) {
			balloon = true;
			if (domain_xml_copy(c, "model", d->balloon_model,
					    sizeof(d->balloon_model)) < 0) {
				domain_xml_err(err, errsz, "<memballoon model> too long");
				return -EINVAL;
			}
			d->balloon_fpr = domain_xml_attr_is(c, "freePageReporting",
							    "on");
		}
	}
	return 0;
}

static int domain_xml_walk(const xmlNode *root, struct domain_xml *d,
			   char *err, size_t errsz)
{
	unsigned int cells = 0, cells_shared = 0, cells_private = 0;
	bool access_shared = false;
	int r = 0;

	if (!root || !domain_xml_is(root, "domain")) {
		domain_xml_err(err, errsz, "not a libvirt domain: the root element is not <domain>");
		return -EINVAL;
	}
	if (domain_xml_copy(root, "type", d->type, sizeof(d->type)) < 0) {
		domain_xml_err(err, errsz, "<domain type> too long");
		return -EINVAL;
	}
	for (const xmlNode *c = root->children; c && r == 0; c = c->next) {
		if (domain_xml_is(c, "name")) {
			if (domain_xml_copy(c, NULL, d->name, sizeof(d->name)) < 0) {
				domain_xml_err(err, errsz, "<name> longer than %d bytes",
					       DOMAIN_XML_NAME_MAX - 1);
				r = -EINVAL;
			}
		} else if (domain_xml_is(c, "uuid")) {
			if (domain_xml_copy(c, NULL, d->uuid, sizeof(d->uuid)) < 0) {
				domain_xml_err(err, errsz, "<uuid> too long");
				r = -EINVAL;
			}
		} else if (domain_xml_is(c, "memory")) {
			r = domain_xml_memory(c, d, err, errsz);
		} else if (domain_xml_is(c, "memoryBacking")) {
			domain_xml_backing(c, d, &access_shared);
		} else if (domain_xml_is(c, "cpu")) {
			domain_xml_numa(c, &cells, &cells_shared, &cells_private);
		} else if (domain_xml_is(c, "devices")) {
			r = domain_xml_devices(c, d, err, errsz);
		}
	}
	if (r < 0)
		return r;
	if (!d->name[0]) {
		domain_xml_err(err, errsz, "the domain has no <name>");
		return -EINVAL;
	}
	d->mem_shared = (access_shared && cells_private == 0) ||
			(cells > 0 && cells_shared == cells);
	return 0;
}

int domain_xml_parse(const char *xml, size_t len, struct domain_xml *ret,
		     char *err, size_t errsz)
{
	struct domain_xml d = { 0 };
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	int r;

	if (err && errsz)
		err[0] = '\0';
	if (!xml || len == 0) {
		domain_xml_err(err, errsz, "empty domain XML");
		return -EINVAL;
	}
	if (len > DOMAIN_XML_MAX) {
		domain_xml_err(err, errsz, "domain XML of %zu bytes is over the %u byte limit",
			       len, DOMAIN_XML_MAX);
		return -EFBIG;
	}
	if (memmem(xml, len, "<!DOCTYPE", 9) || memmem(xml, len, "<!ENTITY", 8)) {
		domain_xml_err(err, errsz, "domain XML with a DOCTYPE or ENTITY declaration is refused");
		return -EINVAL;
	}

	ctxt = xmlNewParserCtxt();
	if (!ctxt) {
		domain_xml_err(err, errsz, "out of memory");
		return -ENOMEM;
	}
	doc = xmlCtxtReadMemory(ctxt, xml, (int)len, "domain.xml", NULL,
				XML_PARSE_NONET | XML_PARSE_NOERROR |
				XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *e = xmlCtxtGetLastError(ctxt);

		if (e && e->message)
			domain_xml_err(err, errsz, "domain XML is not well-formed: line %d: %s",
				       e->line, e->message);
		else
			domain_xml_err(err, errsz, "domain XML is not well-formed");
		r = -EINVAL;
		goto out_free_ctxt;
	}
	if (doc->intSubset || doc->extSubset) {
		domain_xml_err(err, errsz, "domain XML with a DOCTYPE is refused");
		r = -EINVAL;
		goto out_free_doc;
	}
	r = domain_xml_walk(xmlDocGetRootElement(doc), &d, err, errsz);
	if (r == 0)
		*ret = d;
out_free_doc:
	xmlFreeDoc(doc);
out_free_ctxt:
	xmlFreeParserCtxt(ctxt);
	return r;
}

bool domain_xml_channel_ok(const struct domain_xml *d)
{
	return d->channel && strcmp(d->channel_type, "unix") == 0 &&
	       d->channel_bind;
}

bool domain_xml_shared_ok(const struct domain_xml *d)
{
	bool file_backed = d->mem_source == DOMAIN_XML_SOURCE_MEMFD ||
			   d->mem_source == DOMAIN_XML_SOURCE_FILE ||
			   (d->mem_source == DOMAIN_XML_SOURCE_DEFAULT &&
			    d->mem_hugepages);

	return file_backed && d->mem_shared;
}

bool domain_xml_hint_ok(const struct domain_xml *d)
{
	return strcmp(d->balloon_model, "virtio") == 0 && d->balloon_fpr;
}

static void domain_xml_add(struct domain_xml_lack *ret, size_t max, size_t *n,
			   enum domain_xml_blocks blocks, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void domain_xml_add(struct domain_xml_lack *ret, size_t max, size_t *n,
			   enum domain_xml_blocks blocks, const char *fmt, ...)
{
	va_list ap;

	if (*n < max) {
		ret[*n].blocks = blocks;
		va_start(ap, fmt);
		vsnprintf(ret[*n].text, sizeof(ret[*n].text), fmt, ap);
		va_end(ap);
	}
	(*n)++;
}

static const char *domain_xml_source_name(enum domain_xml_source s)
{
	switch (s) {
	case DOMAIN_XML_SOURCE_MEMFD:
		return "a memfd";
	case DOMAIN_XML_SOURCE_FILE:
		return "a file";
	default:
		return "hugetlbfs";
	}
}

size_t domain_xml_lacks(const struct domain_xml *d,
			struct domain_xml_lack *ret, size_t max)
{
	const char *shared_fix = "add <memoryBacking> <source type='memfd'/> <access mode='shared'/> from domain-snippet.xml";
	const char *balloon_fix = "use <memballoon model='virtio' freePageReporting='on'/> from domain-snippet.xml";
	bool hint = domain_xml_hint_ok(d);
	size_t n = 0;

	/* blocks everything: the daemon cannot reach the guest */
	if (!d->channel)
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_ALL,
			       "no virtio channel named %s: vmdefragd cannot talk to the guest; add the <channel type='unix'> element from domain-snippet.xml under <devices>",
			       DOMAIN_XML_CHANNEL);
	else if (strcmp(d->channel_type, "unix") != 0)
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_ALL,
			       "channel %s is type '%s', not 'unix': vmdefragd connects only to unix sockets; use the <channel type='unix'> element from domain-snippet.xml",
			       DOMAIN_XML_CHANNEL, d->channel_type);
	else if (!d->channel_bind)
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_ALL,
			       "channel %s does not have QEMU listen on its socket: use <source mode='bind'/> as in domain-snippet.xml",
			       DOMAIN_XML_CHANNEL);

	/* blocks the shared backend */
	if (domain_xml_shared_ok(d))
		;
	else if (d->mem_source == DOMAIN_XML_SOURCE_MEMFD ||
		 d->mem_source == DOMAIN_XML_SOURCE_FILE ||
		 (d->mem_source == DOMAIN_XML_SOURCE_DEFAULT && d->mem_hugepages))
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_SHARED,
			       "guest RAM is in %s but private to QEMU, so the host cannot punch reclaimed ranges%s; add <access mode='shared'/> to <memoryBacking>",
			       domain_xml_source_name(d->mem_source),
			       hint ? ": reclaim uses only the hint backend" : "");
	else
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_SHARED,
			       "guest RAM is %s anonymous memory: %s; %s",
			       d->mem_shared ? "shared" : "private",
			       hint ? "reclaim uses only the hint backend"
				    : "the host cannot punch reclaimed ranges",
			       shared_fix);

	/* blocks the hint backend */
	if (!d->balloon_model[0])
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_HINT,
			       "no balloon device: free page reporting (the hint backend) is off; %s",
			       balloon_fix);
	else if (strcmp(d->balloon_model, "virtio") != 0)
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_HINT,
			       "balloon model is '%s', not 'virtio': free page reporting (the hint backend) is off; %s",
			       d->balloon_model, balloon_fix);
	else if (!d->balloon_fpr)
		domain_xml_add(ret, max, &n, DOMAIN_XML_BLOCKS_HINT,
			       "balloon has free page reporting off: the hint backend cannot hand emptied blocks back; set freePageReporting='on' on <memballoon>");

	return n < max ? n : max;
}

const char *domain_xml_verdict(const struct domain_xml *d)
{
	bool shared = domain_xml_shared_ok(d), hint = domain_xml_hint_ok(d);

	if (!domain_xml_channel_ok(d))
		return "vmdefrag cannot work with this domain: it has no usable org.vmdefrag.0 channel";
	if (!shared && !hint)
		return "vmdefrag cannot reclaim from this domain: neither its RAM (shared backend) nor its balloon (hint backend) can give memory back";
	if (!shared)
		return "vmdefrag can use only the hint backend (free page reporting) with this domain";
	if (!hint)
		return "vmdefrag uses the shared backend with this domain, without the free page reporting fallback";
	return "vmdefrag uses the shared backend with this domain";
}
