// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_check_domain.c - `vmdefragctl check-domain`: what a libvirt domain
 * lacks for vmdefrag, in plain words.
 *
 * It never talks to vmdefragd.  The domain's XML comes from libvirt
 * (a read-only connection; the live XML when the domain runs, else its
 * definition) or from a file (--xml FILE, "-" for stdin, at most
 * DOMAIN_XML_MAX bytes); domain_xml.c parses it and lists what blocks the
 * shared backend, the hint backend or anything at all.  The answer is
 * printed in words (one line per lack, then the verdict) or, with --json,
 * as one object {domain, ok, verdict, channel_path, lacks: [{blocks,
 * text}]}.  Exit 0 only when nothing lacks; libvirt's failures map to the
 * CLI's statuses (3 unreachable, 4 permission, 5 no such domain).
 * libvirt's and libxml2's default error printers are silenced: the one
 * line we print says it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/xmlerror.h>

#include "cleanup.h"
#include "ctl_check_domain.h"
#include "ctl_exit.h"
#include "ctl_proto.h"
#include "domain_xml.h"
#include "log.h"
#include "virt_conn.h"

/* Reads a whole file (or stdin for "-"), at most DOMAIN_XML_MAX + 1 bytes. */
static int ctl_check_domain_read_file(const char *path, char **ret_buf,
				      size_t *ret_len)
{
	size_t cap = (size_t)DOMAIN_XML_MAX + 2, len = 0;
	_cleanup_fclose_ FILE *opened = NULL;
	_cleanup_free_ char *buf = NULL;
	FILE *f = stdin;
	size_t n;

	if (strcmp(path, "-") != 0) {
		f = opened = fopen(path, "re");
		if (!f)
			return ctl_exit_fail(CTL_EXIT_USAGE, "cannot open '%s': %s",
					     path, strerror(errno));
	}
	buf = malloc(cap);
	if (!buf)
		return ctl_exit_fail(CTL_EXIT_FAILED, "out of memory");
	while (len < cap - 1 && (n = fread(buf + len, 1, cap - 1 - len, f)) > 0)
		len += n;
	if (ferror(f))
		return ctl_exit_fail(CTL_EXIT_USAGE, "cannot read '%s'", path);
	buf[len] = '\0';
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static void ctl_check_domain_virt_quiet(void *opaque, virErrorPtr err)
{
}

/* libxml2's default handler prints to stderr (libvirt's test driver parses
 * in-process); the libvirt error we report says it in one line. */
static void ctl_check_domain_xml_quiet(void *ctx, const char *msg, ...)
{
}

CLEANUP_DEFINE(ctl_check_domain_conn_closep, virConnectPtr, virConnectClose)
CLEANUP_DEFINE(ctl_check_domain_dom_freep, virDomainPtr, virDomainFree)

/*
 * The XML of libvirt domain `name` (live if it runs, else its definition),
 * through a read-only connection; *ret_xml is malloc'ed.  Returns 0 or an
 * exit status (the error printed).
 */
static int ctl_check_domain_libvirt_xml(const char *uri, const char *name,
					char **ret_xml)
{
	_cleanup_(ctl_check_domain_conn_closep) virConnectPtr conn = NULL;
	_cleanup_(ctl_check_domain_dom_freep) virDomainPtr dom = NULL;
	virErrorPtr e;
	char *xml;
	int code;

	virSetErrorFunc(NULL, ctl_check_domain_virt_quiet);
	xmlSetGenericErrorFunc(NULL, ctl_check_domain_xml_quiet);
	conn = virConnectOpenReadOnly(uri);
	if (!conn) {
		e = virGetLastError();
		code = e && (e->code == VIR_ERR_AUTH_FAILED ||
			     e->code == VIR_ERR_AUTH_CANCELLED ||
			     e->code == VIR_ERR_OPERATION_DENIED ||
			     (e->code == VIR_ERR_SYSTEM_ERROR &&
			      (e->int1 == EACCES || e->int1 == EPERM))) ?
		       CTL_EXIT_PERMISSION : CTL_EXIT_NO_DAEMON;
		return ctl_exit_fail(code, "cannot reach libvirt%s%s: %s",
				     uri ? " at " : "", uri ?: "",
				     virt_conn_last_error());
	}
	dom = virDomainLookupByName(conn, name);
	if (!dom) {
		e = virGetLastError();
		if (e && e->code == VIR_ERR_NO_DOMAIN)
			return ctl_exit_fail(CTL_EXIT_UNKNOWN_VM, "libvirt has no "
					     "domain named '%s'", name);
		return ctl_exit_fail(CTL_EXIT_FAILED, "cannot look up domain "
				     "'%s': %s", name, virt_conn_last_error());
	}
	xml = virDomainGetXMLDesc(dom, 0);
	if (!xml)
		return ctl_exit_fail(CTL_EXIT_FAILED, "cannot read the XML of domain "
				     "'%s': %s", name, virt_conn_last_error());
	*ret_xml = xml;
	return 0;
}

static const char *ctl_check_domain_blocks_name(enum domain_xml_blocks b,
						bool json)
{
	switch (b) {
	case DOMAIN_XML_BLOCKS_ALL:
		return json ? "all" : "needed for anything";
	case DOMAIN_XML_BLOCKS_SHARED:
		return json ? "shared" : "needed for the shared backend";
	default:
		return json ? "hint" : "needed for the hint backend";
	}
}

/* The name as typed when it is plain, else quoted. */
static const char *ctl_check_domain_plain_name(const char *name, char *buf,
					       size_t sz)
{
	if (name[0] && strspn(name, "abcdefghijklmnopqrstuvwxyz"
			      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:+-") ==
	    strlen(name) && strlen(name) < sz) {
		strcpy(buf, name);
		return buf;
	}
	return log_quote_str(name, buf, sz);
}

/* Prints what the domain in xml lacks; the exit status (0: nothing). */
static int ctl_check_domain_report(const char *label, const char *xml,
				   size_t len, bool from_file, bool json)
{
	struct domain_xml_lack lacks[DOMAIN_XML_LACKS_MAX];
	struct domain_xml d;
	char err[256], q[300];
	size_t n;

	if (domain_xml_parse(xml, len, &d, err, sizeof(err)) < 0)
		return ctl_exit_fail(from_file ? CTL_EXIT_USAGE : CTL_EXIT_FAILED,
				     "%s: %s", label, err);
	n = domain_xml_lacks(&d, lacks, DOMAIN_XML_LACKS_MAX);
	if (json) {
		struct json_object *o = json_object_new_object();
		struct json_object *a = json_object_new_array();

		json_object_object_add(o, "domain", json_object_new_string(d.name));
		json_object_object_add(o, "ok", json_object_new_boolean(n == 0));
		json_object_object_add(o, "verdict",
				       json_object_new_string(domain_xml_verdict(&d)));
		json_object_object_add(o, "channel_path",
				       json_object_new_string(d.channel_path));
		for (size_t i = 0; i < n; i++) {
			struct json_object *l = json_object_new_object();

			json_object_object_add(l, "blocks", json_object_new_string(
				ctl_check_domain_blocks_name(lacks[i].blocks, true)));
			json_object_object_add(l, "text",
					       json_object_new_string(lacks[i].text));
			json_object_array_add(a, l);
		}
		json_object_object_add(o, "lacks", a);
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		return n ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	}
	ctl_check_domain_plain_name(d.name, q, sizeof(q));
	if (n == 0) {
		printf("domain %s has everything vmdefrag needs\n", q);
		return CTL_EXIT_OK;
	}
	printf("domain %s lacks what vmdefrag needs:\n", q);
	for (size_t i = 0; i < n; i++)
		printf("  %s: %s\n",
		       ctl_check_domain_blocks_name(lacks[i].blocks, false),
		       lacks[i].text);
	printf("%s\n", domain_xml_verdict(&d));
	return CTL_EXIT_FAILED;
}

/* check-domain NAME [--connect URI] | check-domain --xml FILE */
int ctl_check_domain_main(int argc, char **argv, bool json)
{
	const char *name = NULL, *uri = NULL, *file = NULL;
	_cleanup_free_ char *xml = NULL;
	size_t len = 0;
	int r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--connect") == 0 || strcmp(argv[i], "--xml") == 0) {
			if (i + 1 >= argc)
				return ctl_exit_fail(CTL_EXIT_USAGE, "option '%s' "
						     "needs an argument (see "
						     "--help)", argv[i]);
			if (argv[i][2] == 'c')
				uri = argv[++i];
			else
				file = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' "
					     "for check-domain (see --help)",
					     argv[i]);
		} else if (!name) {
			name = argv[i];
		} else {
			return ctl_exit_fail(CTL_EXIT_USAGE, "check-domain takes "
					     "one domain name");
		}
	}
	if (file && (name || uri))
		return ctl_exit_fail(CTL_EXIT_USAGE, "check-domain takes a domain "
				     "NAME or --xml FILE, not both");
	if (!file && (!name || !name[0]))
		return ctl_exit_fail(CTL_EXIT_USAGE, "check-domain needs a domain "
				     "name or --xml FILE (see --help)");
	if (file) {
		r = ctl_check_domain_read_file(file, &xml, &len);
		if (r)
			return r;
		return ctl_check_domain_report(file, xml, len, true, json);
	}
	r = ctl_check_domain_libvirt_xml(uri, name, &xml);
	if (r)
		return r;
	return ctl_check_domain_report(name, xml, strlen(xml), false, json);
}
