/* SPDX-License-Identifier: GPL-2.0 */
/*
 * genl.h - family-level client of vmdefrag.ko's generic netlink family
 * (include/uapi/vmdefrag_genl.h), prefix agent_genl_: sockets, message
 * construction, the request/reply transaction.  nl.c builds the agent's
 * typed commands on it; tests/guest/vdfnl.c its test commands.
 */
#ifndef AGENT_GENL_H
#define AGENT_GENL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include "uapi/vmdefrag_genl.h"
#include "vmdefrag/proto.h"

/* libnl's NLE_* code (either sign) as a negative errno. */
int agent_genl_errno(int nlerr);

/*
 * A connected generic netlink socket: message peek on (replies with
 * thousands of ranges exceed a page), a receive buffer of rcvbuf bytes,
 * extended acks on, and a receive timeout of reply_timeout_ms (0: none).
 */
int agent_genl_sock(struct nl_sock **ret_sk, int rcvbuf, int reply_timeout_ms);

/* The family's id (-ENOENT while the module is not loaded). */
int agent_genl_family(struct nl_sock *sk, int *ret_family);

/* A request for cmd with room for size bytes (0: libnl's default). */
struct nl_msg *agent_genl_msg(int family, uint8_t cmd, int flags, size_t size);

/*
 * Appends a VMDEFRAG_A_RANGES nest of n ranges (-EMSGSIZE past the
 * message's room or a nest's 64 KiB).
 */
int agent_genl_put_ranges(struct nl_msg *msg, const struct proto_range *r,
			  uint32_t n);

/* Room for a request carrying n ranges (each nest is 4 + 2 * 12 bytes). */
static inline size_t agent_genl_ranges_size(uint32_t n)
{
	return 512 + (size_t)n * 32;
}

/*
 * One request/reply transaction.  reply() sees each reply message (its
 * command and attributes parsed with policy, or tb NULL if they do not
 * parse); a negative return ends the transaction with that errno.
 */
struct agent_genl_txn {
	int (*reply)(struct agent_genl_txn *t, uint8_t cmd, struct nlattr **tb);
	const struct nla_policy *policy;	/* NULL: types unchecked */
	void *out;				/* for reply() */
	/* results */
	int err;		/* the module's errno, or reply()'s */
	int nlerr;		/* libnl's code when send or receive failed */
	bool sent;		/* the request left */
	char extack[256];	/* the module's extended ack message, "" if none */
	bool done;
};

/*
 * Sends msg (consumed) on sk and receives until its ACK, NLMSG_DONE or
 * error.  0, t->err, -ETIMEDOUT when sk's receive timeout expired (sk may
 * still get the late reply: replace it), or libnl's failure as an errno
 * (t->nlerr says which).
 */
int agent_genl_transact(struct nl_sock *sk, struct nl_msg *msg,
			struct agent_genl_txn *t);

#endif /* AGENT_GENL_H */
