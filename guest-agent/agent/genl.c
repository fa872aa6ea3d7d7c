/* SPDX-License-Identifier: GPL-2.0 */
/*
 * genl.c - the family-level part of a generic netlink client of
 * vmdefrag.ko: what any program talking to the family needs, whatever it
 * asks.  The agent (nl.c) and the test client vdfnl (tests/guest) share it.
 *
 * A transaction sends one request and receives on the same socket until
 * the request's ACK, the dump's NLMSG_DONE, or an NLMSG_ERROR.  The
 * module's errno from NLMSG_ERROR is kept as is (libnl would turn it into
 * an NLE_* code), with the extended ack message when the kernel gave one.
 * A doit handler runs inside our sendmsg(), so its reply is queued before
 * the receive starts; a receive timeout, if the socket has one, is the
 * safety net for a reply that never comes.
 *
 * Ranges go out as VMDEFRAG_A_RANGES, a nest (NLA_F_NESTED) of
 * VMDEFRAG_A_RANGE nests of ADDR and LEN.  Nothing here logs.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <linux/netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/msg.h>

#include "genl.h"

int agent_genl_errno(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case 0:			return 0;
	case NLE_NOMEM:		return -ENOMEM;
	case NLE_OBJ_NOTFOUND:	return -ENOENT;
	case NLE_AGAIN:		return -EAGAIN;
	case NLE_INTR:		return -EINTR;
	case NLE_BUSY:		return -EBUSY;
	case NLE_PERM:		return -EPERM;
	case NLE_NOACCESS:	return -EACCES;
	case NLE_INVAL:		return -EINVAL;
	case NLE_RANGE:		return -ERANGE;
	case NLE_MSGSIZE:	return -EMSGSIZE;
	case NLE_OPNOTSUPP:	return -EOPNOTSUPP;
	case NLE_NODEV:		return -ENODEV;
	case NLE_MSG_OVERFLOW:	return -ENOBUFS;
	case NLE_PARSE_ERR:
	case NLE_MSG_TRUNC:
	case NLE_MSG_TOOSHORT:	return -EBADMSG;
	default:		return -EIO;
	}
}

int agent_genl_sock(struct nl_sock **ret_sk, int rcvbuf, int reply_timeout_ms)
{
	struct timeval tv = {
		.tv_sec = reply_timeout_ms / 1000,
		.tv_usec = reply_timeout_ms % 1000 * 1000,
	};
	struct nl_sock *sk = nl_socket_alloc();
	int one = 1;
	int r;

	if (!sk)
		return -ENOMEM;
	r = genl_connect(sk);
	if (r < 0) {
		nl_socket_free(sk);
		return agent_genl_errno(r);
	}
	nl_socket_enable_msg_peek(sk);
	(void)nl_socket_set_buffer_size(sk, rcvbuf, 1 << 20);
	/* best effort: an older kernel just sends no message */
	(void)setsockopt(nl_socket_get_fd(sk), SOL_NETLINK, NETLINK_EXT_ACK,
			 &one, sizeof(one));
	if (reply_timeout_ms &&
	    setsockopt(nl_socket_get_fd(sk), SOL_SOCKET, SO_RCVTIMEO, &tv,
		       sizeof(tv)) < 0) {
		r = -errno;
		nl_socket_free(sk);
		return r;
	}
	*ret_sk = sk;
	return 0;
}

int agent_genl_family(struct nl_sock *sk, int *ret_family)
{
	int r = genl_ctrl_resolve(sk, VMDEFRAG_GENL_NAME);

	if (r < 0)
		return agent_genl_errno(r);
	*ret_family = r;
	return 0;
}

struct nl_msg *agent_genl_msg(int family, uint8_t cmd, int flags, size_t size)
{
	struct nl_msg *msg = size ? nlmsg_alloc_size(size) : nlmsg_alloc();

	if (!msg)
		return NULL;
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, flags,
			 cmd, VMDEFRAG_GENL_VERSION)) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

int agent_genl_put_ranges(struct nl_msg *msg, const struct proto_range *r,
			  uint32_t n)
{
	struct nlattr *ranges, *range;

	ranges = nla_nest_start(msg, VMDEFRAG_A_RANGES | NLA_F_NESTED);
	if (!ranges)
		return -EMSGSIZE;
	for (uint32_t i = 0; i < n; i++) {
		range = nla_nest_start(msg, VMDEFRAG_A_RANGE | NLA_F_NESTED);
		if (!range ||
		    nla_put_u64(msg, VMDEFRAG_A_RANGE_ADDR, r[i].gpa) < 0 ||
		    nla_put_u64(msg, VMDEFRAG_A_RANGE_LEN, r[i].len) < 0 ||
		    nla_nest_end(msg, range) < 0)
			return -EMSGSIZE;
	}
	/* fails past 64 KiB (u16 nla_len): about 2300 ranges */
	return nla_nest_end(msg, ranges) < 0 ? -EMSGSIZE : 0;
}

/* ---- transaction -------------------------------------------------------- */

static int agent_genl_valid_cb(struct nl_msg *msg, void *arg)
{
	struct agent_genl_txn *t = arg;
	struct genlmsghdr *gh = nlmsg_data(nlmsg_hdr(msg));
	struct nlattr *tb[VMDEFRAG_A_MAX + 1];
	int r;

	if (t->err)
		return NL_SKIP;
	r = genlmsg_parse(nlmsg_hdr(msg), 0, tb, VMDEFRAG_A_MAX,
			  (struct nla_policy *)t->policy);
	if (t->reply) {
		r = t->reply(t, gh->cmd, r < 0 ? NULL : tb);
		if (r < 0)
			t->err = r;
	}
	return NL_OK;
}

/* The error, and its extended ack message if the kernel sent one. */
static int agent_genl_error_cb(struct sockaddr_nl *who, struct nlmsgerr *e,
			       void *arg)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)((char *)e - NLMSG_HDRLEN);
	struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
	struct agent_genl_txn *t = arg;
	size_t off = sizeof(*e);

	if (!t->err)
		t->err = e->error < 0 ? e->error : -EIO;
	t->done = true;
	if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
		return NL_STOP;
	if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - NLMSG_HDRLEN;
	if (NLMSG_HDRLEN + off >= nlh->nlmsg_len)
		return NL_STOP;
	if (nla_parse(tb, NLMSGERR_ATTR_MAX, (struct nlattr *)((char *)e + off),
		      nlh->nlmsg_len - NLMSG_HDRLEN - off, NULL) == 0 &&
	    tb[NLMSGERR_ATTR_MSG])
		snprintf(t->extack, sizeof(t->extack), "%s",
			 nla_get_string(tb[NLMSGERR_ATTR_MSG]));
	return NL_STOP;
}

static int agent_genl_done_cb(struct nl_msg *msg, void *arg)
{
	struct agent_genl_txn *t = arg;

	t->done = true;
	return NL_STOP;
}

int agent_genl_transact(struct nl_sock *sk, struct nl_msg *msg,
			struct agent_genl_txn *t)
{
	struct nl_cb *cb;
	int r;

	cb = nl_cb_alloc(NL_CB_DEFAULT);
	if (!cb) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, agent_genl_valid_cb, t);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, agent_genl_done_cb, t);
	nl_cb_set(cb, NL_CB_FINISH, NL_CB_CUSTOM, agent_genl_done_cb, t);
	nl_cb_err(cb, NL_CB_CUSTOM, agent_genl_error_cb, t);

	r = nl_send_auto(sk, msg);
	nlmsg_free(msg);
	if (r < 0) {
		nl_cb_put(cb);
		t->nlerr = r;
		return agent_genl_errno(r);
	}
	t->sent = true;
	while (!t->done) {
		r = nl_recvmsgs(sk, cb);
		if (r < 0 && !t->done) {
			nl_cb_put(cb);
			t->nlerr = r;
			if (r == -NLE_AGAIN)
				return -ETIMEDOUT;
			return t->err ? t->err : agent_genl_errno(r);
		}
	}
	nl_cb_put(cb);
	return t->err;
}
