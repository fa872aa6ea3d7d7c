/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_help.h - vmdefragctl's help texts (prefix ctl_help_): the whole
 * usage (--help, `help`) and one command's (`help CMD`, `CMD --help`).
 */
#ifndef VDF_CTL_HELP_H
#define VDF_CTL_HELP_H

#include <stdio.h>

/* The usage: every command's synopsis, the options, the exit statuses. */
void ctl_help_usage(FILE *f);

/* One command's synopsis and description on stdout; -ENOENT if unknown. */
int ctl_help_command(const char *name);

#endif /* VDF_CTL_HELP_H */
