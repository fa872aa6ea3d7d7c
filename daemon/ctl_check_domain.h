/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_check_domain.h - the check-domain command of vmdefragctl (prefix
 * ctl_check_domain_).
 */
#ifndef VDF_CTL_CHECK_DOMAIN_H
#define VDF_CTL_CHECK_DOMAIN_H

#include <stdbool.h>

/*
 * check-domain NAME [--connect URI] [--json] | check-domain --xml FILE:
 * argv[0] is "check-domain"; json when --json came before it.  Prints the
 * answer; returns the exit status.
 */
int ctl_check_domain_main(int argc, char **argv, bool json);

#endif /* VDF_CTL_CHECK_DOMAIN_H */
