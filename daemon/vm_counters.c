// SPDX-License-Identifier: GPL-2.0
/*
 * vm_counters.c - per-VM counters and operation history that survive a
 * daemon restart.
 *
 * Prometheus counters must never go down while the thing they count goes
 * on, and the daemon restarts (upgrades, config changes): so the totals
 * metrics.c exports, and the last VM_COUNTERS_HISTORY operations that
 * vmdefragctl history lists, live in one small file per VM under the
 * daemon's state_dir.  Two kinds of sources feed them:
 *
 *   events   an ended operation (vm_counters_op_end(), the reclaim
 *            engine's op-end hook): its kind and result are counted, its
 *            done_bytes added to reclaimed or returned, and it joins the
 *            history ring;
 *   readings counters that live elsewhere and restart from zero there
 *            (the reclaim engine's guest_released_bytes with each daemon,
 *            the guest module's vacate_ns / pages_migrated with each
 *            module load): vm_counters_observe() adds what grew since the
 *            last reading; a reading below the last one means the source
 *            restarted, and all of it is new.  The module's last reading
 *            is saved too, so a daemon restart under the same guest does
 *            not count its module's totals twice (a guest that rebooted
 *            while the daemon was down and got further than before is
 *            undercounted: nothing can tell those apart).
 *
 * Saving is debounced: a change arms a VM_COUNTERS_SAVE_DELAY_MS timer and
 * the file is written when it fires (and on vm_counters_free()), to a
 * temporary file that is fsync'ed and renamed over the old one, so a crash
 * leaves either file whole.  A failing save is logged once per distinct
 * errno and retried at the next change.
 *
 * The file is text, one record a line, checked whole when loaded:
 *
 *   vmdefrag-counters 2
 *   total NAME VALUE                    (each name of the totals, once)
 *   ops KIND STATE VALUE                (nonzero cells only)
 *   seen vacate_ns|pages_migrated VALUE (the module's last reading)
 *   op ID KIND ORIGIN STATE START_MS DURATION_MS ASKED DONE ERRNO PAGES NS
 *   end HASH                            (FNV-1a 64 of every byte above)
 *
 * PAGES and NS are the operation's work (pages_migrated, vacate_ns), both
 * "-" when it is not known.  Version 1 (this release's first files) had op
 * lines without them: it is read as such, the work unknown, and the next
 * save writes version 2.  Anything else (an unknown line or version, a bad
 * number, a missing or wrong end) is corrupt: a warning, and the VM starts
 * from zero.
 *
 * Single-threaded, on the loop's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "file.h"
#include "log.h"
#include "loop.h"
#include "vm_counters.h"

#define VM_COUNTERS_MAGIC	"vmdefrag-counters 2"
#define VM_COUNTERS_MAGIC_V1	"vmdefrag-counters 1"	/* op lines without work */
#define VM_COUNTERS_FILE_MAX	(64u * 1024)
#define VM_COUNTERS_PATH_MAX	512

struct vm_counters {
	struct loop *loop;
	char name[64];
	char path[VM_COUNTERS_PATH_MAX];	/* "" when not persisted */
	struct vm_counters_totals t;
	struct vm_counters_seen seen;		/* the module's last reading */
	uint64_t seen_released;			/* this daemon's reclaim engine */
	struct vm_history_entry hist[VM_COUNTERS_HISTORY];	/* ring */
	size_t nhist;				/* entries held */
	size_t head;				/* where the next one goes */
	bool dirty;
	int last_save_error;			/* logged once per errno */
	struct loop_timer save_timer;
};

/* The totals' names in the file, and where each lives. */
static const struct {
	const char *name;
	size_t off;
} vm_counters_fields[] = {
	{ "reclaimed_bytes", offsetof(struct vm_counters_totals, reclaimed_bytes) },
	{ "returned_bytes", offsetof(struct vm_counters_totals, returned_bytes) },
	{ "guest_released_bytes",
	  offsetof(struct vm_counters_totals, guest_released_bytes) },
	{ "vacate_ns", offsetof(struct vm_counters_totals, vacate_ns) },
	{ "pages_migrated", offsetof(struct vm_counters_totals, pages_migrated) },
	{ "policy_misses", offsetof(struct vm_counters_totals, policy_misses) },
};
#define VM_COUNTERS_NFIELDS \
	(sizeof(vm_counters_fields) / sizeof(vm_counters_fields[0]))

static uint64_t *vm_counters_field(struct vm_counters_totals *t, size_t i)
{
	return (uint64_t *)((char *)t + vm_counters_fields[i].off);
}

static uint64_t vm_counters_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

int vm_counters_file_name(const char *vm_name, char *buf, size_t size)
{
	size_t n = 0;

	for (const char *p = vm_name; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
			     (ch == '.' && p != vm_name);

		if (n + (plain ? 1 : 3) >= size)
			return -ENAMETOOLONG;
		if (plain)
			buf[n++] = (char)ch;
		else
			n += (size_t)snprintf(buf + n, size - n, "%%%02X", ch);
	}
	if (n == 0 || n + sizeof(".counters") > size)
		return -ENAMETOOLONG;
	memcpy(buf + n, ".counters", sizeof(".counters"));
	return 0;
}

/* ---- parsing ---------------------------------------------------------- */

static int vm_counters_u64(const char *s, uint64_t *ret_v)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EBADMSG;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EBADMSG;
	*ret_v = v;
	return 0;
}

static int vm_counters_kind(const char *s)
{
	for (int k = 0; k < VM_COUNTERS_KINDS; k++)
		if (strcmp(s, reclaim_kind_name((enum reclaim_kind)k)) == 0)
			return k;
	return -1;
}

/* Ended states only: RUNNING is never counted nor recorded. */
static int vm_counters_state(const char *s)
{
	for (int st = RECLAIM_OP_DONE; st < VM_COUNTERS_STATES; st++)
		if (strcmp(s, reclaim_op_state_name((enum reclaim_op_state)st)) == 0)
			return st;
	return -1;
}

static int vm_counters_origin(const char *s)
{
	for (int o = RECLAIM_ORIGIN_USER; o <= RECLAIM_ORIGIN_DAEMON; o++)
		if (strcmp(s, reclaim_origin_name((enum reclaim_origin)o)) == 0)
			return o;
	return -1;
}

/* Splits line (modified) at single spaces into w[max]; max + 1: too many. */
static size_t vm_counters_words(char *line, char **w, size_t max)
{
	size_t n = 0;

	for (;;) {
		if (n == max)
			return max + 1;
		w[n++] = line;
		line = strchr(line, ' ');
		if (!line)
			return n;
		*line++ = '\0';
	}
}

/* An op line's work: both numbers, or both "-". */
static int vm_counters_parse_work(char **w, struct vm_history_entry *e)
{
	if (strcmp(w[0], "-") == 0 && strcmp(w[1], "-") == 0)
		return 0;
	if (vm_counters_u64(w[0], &e->pages_migrated) < 0 ||
	    vm_counters_u64(w[1], &e->vacate_ns) < 0)
		return -EBADMSG;
	e->work_known = true;
	return 0;
}

static int vm_counters_parse_op(char **w, struct vm_history_entry *e)
{
	uint64_t v[7];
	int kind = vm_counters_kind(w[2]), origin = vm_counters_origin(w[3]);
	int state = vm_counters_state(w[4]);
	long long err;
	char *end;

	if (kind < 0 || origin < 0 || state < 0)
		return -EBADMSG;
	if (vm_counters_u64(w[1], &v[0]) < 0 || v[0] > UINT32_MAX)
		return -EBADMSG;
	for (int i = 1; i < 5; i++)
		if (vm_counters_u64(w[4 + i], &v[i]) < 0)
			return -EBADMSG;
	errno = 0;
	err = strtoll(w[9], &end, 10);
	if (errno || *end || !*w[9] || err > 0 || err < -PROTO_ERRNO_MAX)
		return -EBADMSG;
	*e = (struct vm_history_entry) {
		.id = (uint32_t)v[0], .kind = (enum reclaim_kind)kind,
		.origin = (enum reclaim_origin)origin,
		.state = (enum reclaim_op_state)state, .started_unix_ms = v[1],
		.duration_ms = v[2], .asked_bytes = v[3], .done_bytes = v[4],
		.error = (int32_t)err,
	};
	return 0;
}

int vm_counters_parse(const char *text, size_t len, struct vm_counters_totals *ret_t,
		      struct vm_history_entry *ret_hist, size_t *ret_nhist,
		      struct vm_counters_seen *ret_seen)
{
	struct vm_counters_totals t = { 0 };
	struct vm_counters_seen seen = { 0 };
	_cleanup_free_ struct vm_history_entry *hist = NULL;
	_cleanup_free_ char *copy = NULL;
	bool have[VM_COUNTERS_NFIELDS] = { false };
	size_t nhist = 0, pos = 0;
	bool v1 = false;
	const char *last;

	if (len > VM_COUNTERS_FILE_MAX || len == 0 || text[len - 1] != '\n' ||
	    memchr(text, '\0', len))
		return -EBADMSG;
	/* the end line: "end HASH\n", the hash over everything before it */
	last = text + len - 1;
	while (last > text && last[-1] != '\n')
		last--;
	{
		char want[40];

		snprintf(want, sizeof(want), "end %016" PRIx64 "\n",
			 vm_counters_hash(text, (size_t)(last - text)));
		if ((size_t)(text + len - last) != strlen(want) ||
		    memcmp(last, want, strlen(want)) != 0)
			return -EBADMSG;
	}
	copy = strndup(text, (size_t)(last - text));
	hist = calloc(VM_COUNTERS_HISTORY, sizeof(*hist));
	if (!copy || !hist)
		return -ENOMEM;

	for (char *line = copy, *nl; *line; line = nl + 1) {
		char *w[12];
		size_t n;

		nl = strchr(line, '\n');
		if (!nl)
			return -EBADMSG;
		*nl = '\0';
		if (pos++ == 0) {
			if (strcmp(line, VM_COUNTERS_MAGIC_V1) == 0)
				v1 = true;
			else if (strcmp(line, VM_COUNTERS_MAGIC) != 0)
				return -EBADMSG;
			continue;
		}
		n = vm_counters_words(line, w, 12);
		if (n == 3 && strcmp(w[0], "total") == 0) {
			size_t i;
			uint64_t v;

			for (i = 0; i < VM_COUNTERS_NFIELDS; i++)
				if (strcmp(w[1], vm_counters_fields[i].name) == 0)
					break;
			if (i == VM_COUNTERS_NFIELDS || have[i] ||
			    vm_counters_u64(w[2], &v) < 0)
				return -EBADMSG;
			have[i] = true;
			*vm_counters_field(&t, i) = v;
		} else if (n == 4 && strcmp(w[0], "ops") == 0) {
			int k = vm_counters_kind(w[1]), st = vm_counters_state(w[2]);

			if (k < 0 || st < 0 || t.ops[k][st] ||
			    vm_counters_u64(w[3], &t.ops[k][st]) < 0)
				return -EBADMSG;
		} else if (n == 3 && strcmp(w[0], "seen") == 0) {
			uint64_t *dst = strcmp(w[1], "vacate_ns") == 0 ? &seen.vacate_ns :
					strcmp(w[1], "pages_migrated") == 0 ?
					&seen.pages_migrated : NULL;

			if (!dst || vm_counters_u64(w[2], dst) < 0)
				return -EBADMSG;
			seen.stats = true;
		} else if (n == (v1 ? 10u : 12u) && strcmp(w[0], "op") == 0) {
			if (nhist == VM_COUNTERS_HISTORY ||
			    vm_counters_parse_op(w, &hist[nhist]) < 0 ||
			    (!v1 && vm_counters_parse_work(w + 10, &hist[nhist]) < 0))
				return -EBADMSG;
			nhist++;
		} else {
			return -EBADMSG;
		}
	}
	for (size_t i = 0; i < VM_COUNTERS_NFIELDS; i++)
		if (!have[i])
			return -EBADMSG;
	*ret_t = t;
	memcpy(ret_hist, hist, nhist * sizeof(*hist));
	*ret_nhist = nhist;
	*ret_seen = seen;
	return 0;
}

/* ---- saving ----------------------------------------------------------- */

/* The file's text; *ret_len its length.  NULL without memory. */
static char *vm_counters_format(const struct vm_counters *c, size_t *ret_len)
{
	_cleanup_free_ struct vm_history_entry *hist = NULL;
	char *buf = NULL;
	size_t size = 0, nhist;
	FILE *f;

	hist = calloc(VM_COUNTERS_HISTORY, sizeof(*hist));
	if (!hist)
		return NULL;
	f = open_memstream(&buf, &size);
	if (!f)
		return NULL;
	fprintf(f, "%s\n", VM_COUNTERS_MAGIC);
	for (size_t i = 0; i < VM_COUNTERS_NFIELDS; i++)
		fprintf(f, "total %s %" PRIu64 "\n", vm_counters_fields[i].name,
			*vm_counters_field((struct vm_counters_totals *)&c->t, i));
	for (int k = 0; k < VM_COUNTERS_KINDS; k++)
		for (int st = RECLAIM_OP_DONE; st < VM_COUNTERS_STATES; st++)
			if (c->t.ops[k][st])
				fprintf(f, "ops %s %s %" PRIu64 "\n",
					reclaim_kind_name((enum reclaim_kind)k),
					reclaim_op_state_name((enum reclaim_op_state)st),
					c->t.ops[k][st]);
	if (c->seen.stats)
		fprintf(f, "seen vacate_ns %" PRIu64 "\nseen pages_migrated %" PRIu64
			"\n", c->seen.vacate_ns, c->seen.pages_migrated);
	nhist = vm_counters_history(c, hist, VM_COUNTERS_HISTORY);
	for (size_t i = 0; i < nhist; i++) {
		const struct vm_history_entry *e = &hist[i];

		fprintf(f, "op %" PRIu32 " %s %s %s %" PRIu64 " %" PRIu64 " %" PRIu64
			" %" PRIu64 " %" PRId32, e->id, reclaim_kind_name(e->kind),
			reclaim_origin_name(e->origin), reclaim_op_state_name(e->state),
			e->started_unix_ms, e->duration_ms, e->asked_bytes,
			e->done_bytes, e->error);
		if (e->work_known)
			fprintf(f, " %" PRIu64 " %" PRIu64 "\n", e->pages_migrated,
				e->vacate_ns);
		else
			fprintf(f, " - -\n");
	}
	if (fflush(f) != 0) {
		fclose(f);
		free(buf);
		return NULL;
	}
	fprintf(f, "end %016" PRIx64 "\n", vm_counters_hash(buf, size));
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*ret_len = size;
	return buf;
}

/* mkdir -p of the state directory's last two levels (/var/lib exists). */
static int vm_counters_mkdir(const char *path)
{
	char dir[VM_COUNTERS_PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) == 0 || errno == EEXIST)
		return 0;
	if (errno == ENOENT) {
		char *up = strrchr(dir, '/');

		if (up && up != dir) {
			*up = '\0';
			if (mkdir(dir, 0755) < 0 && errno != EEXIST)
				return -errno;
			*up = '/';
		}
		if (mkdir(dir, 0755) == 0 || errno == EEXIST)
			return 0;
	}
	return -errno;
}

int vm_counters_save(struct vm_counters *c)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	loop_timer_disarm(c->loop, &c->save_timer);
	if (!c->path[0]) {
		c->dirty = false;
		return 0;
	}
	text = vm_counters_format(c, &len);
	if (!text)
		return log_error_errno(-ENOMEM, "VM '%s': cannot format its counters",
				       c->name);
	r = vm_counters_mkdir(c->path);
	if (r == 0)
		r = file_replace(c->path, text, len, 0644);
	if (r < 0) {
		if (r != c->last_save_error)
			log_warning_errno(r, "VM '%s': cannot save counters to '%s': %m",
					  c->name, c->path);
		c->last_save_error = r;
		return r;
	}
	c->last_save_error = 0;
	c->dirty = false;
	return 0;
}

static void vm_counters_save_timer(struct loop_timer *t)
{
	vm_counters_save(t->userdata);
}

static void vm_counters_changed(struct vm_counters *c)
{
	c->dirty = true;
	if (!c->save_timer.armed)
		loop_timer_arm(c->loop, &c->save_timer, VM_COUNTERS_SAVE_DELAY_MS);
}

/* ---- lifetime --------------------------------------------------------- */

static void vm_counters_load(struct vm_counters *c)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct vm_history_entry *hist = c->hist;
	size_t len = 0, nhist = 0;
	struct stat stbuf;
	int r;

	fd = open(c->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warning_errno(-errno, "VM '%s': cannot read counters '%s': "
					  "%m, starting from zero", c->name, c->path);
		return;
	}
	if (fstat(fd, &stbuf) < 0 || !S_ISREG(stbuf.st_mode) ||
	    stbuf.st_size > VM_COUNTERS_FILE_MAX) {
		log_warning("VM '%s': counters '%s' is not a regular file of at most "
			    "%u bytes, starting from zero", c->name, c->path,
			    VM_COUNTERS_FILE_MAX);
		return;
	}
	buf = malloc(VM_COUNTERS_FILE_MAX + 1);
	if (!buf)
		return;
	while (len <= VM_COUNTERS_FILE_MAX) {
		ssize_t n = read(fd, buf + len, VM_COUNTERS_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_warning_errno(-errno, "VM '%s': cannot read counters '%s': "
					  "%m, starting from zero", c->name, c->path);
			return;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	r = vm_counters_parse(buf, len, &c->t, hist, &nhist, &c->seen);
	if (r < 0) {
		memset(&c->t, 0, sizeof(c->t));
		memset(&c->seen, 0, sizeof(c->seen));
		log_warning("VM '%s': counters '%s' are corrupt, starting from zero",
			    c->name, c->path);
		return;
	}
	c->nhist = nhist;
	c->head = nhist % VM_COUNTERS_HISTORY;
	log_debug("VM '%s': counters loaded from '%s' (%zu operations in history)",
		  c->name, c->path, nhist);
}

int vm_counters_new(struct loop *loop, const char *state_dir, const char *vm_name,
		    struct vm_counters **ret_c)
{
	struct vm_counters *c = calloc(1, sizeof(*c));
	char file[256];

	if (!c)
		return -ENOMEM;
	c->loop = loop;
	snprintf(c->name, sizeof(c->name), "%s", vm_name);
	loop_timer_init(&c->save_timer, vm_counters_save_timer, c);
	if (state_dir && state_dir[0]) {
		if (vm_counters_file_name(vm_name, file, sizeof(file)) < 0 ||
		    (size_t)snprintf(c->path, sizeof(c->path), "%s/%s", state_dir,
				     file) >= sizeof(c->path)) {
			log_warning("VM '%s': state file name too long, counters are "
				    "kept in memory only", vm_name);
			c->path[0] = '\0';
		} else {
			vm_counters_load(c);
		}
	}
	*ret_c = c;
	return 0;
}

void vm_counters_free(struct vm_counters *c)
{
	if (!c)
		return;
	if (c->dirty)
		vm_counters_save(c);
	loop_timer_disarm(c->loop, &c->save_timer);
	free(c);
}

/* ---- counting --------------------------------------------------------- */

void vm_counters_op_end(struct vm_counters *c, const struct reclaim_op_info *op)
{
	struct vm_history_entry *e;

	if (op->state == RECLAIM_OP_RUNNING || (unsigned int)op->kind >= VM_COUNTERS_KINDS ||
	    (unsigned int)op->state >= VM_COUNTERS_STATES)
		return;
	c->t.ops[op->kind][op->state]++;
	if (op->kind == RECLAIM_KIND_RECLAIM)
		c->t.reclaimed_bytes += op->done_bytes;
	else if (op->kind == RECLAIM_KIND_RETURN)
		c->t.returned_bytes += op->done_bytes;
	e = &c->hist[c->head];
	*e = (struct vm_history_entry) {
		.id = op->id, .kind = op->kind, .origin = op->origin,
		.state = op->state, .started_unix_ms = op->started_unix_ms,
		.duration_ms = op->elapsed_ms, .asked_bytes = op->target_bytes,
		.done_bytes = op->done_bytes,
		.error = op->error < -PROTO_ERRNO_MAX ? -EIO : op->error,
		.work_known = op->work_known, .pages_migrated = op->pages_migrated,
		.vacate_ns = op->vacate_ns,
	};
	c->head = (c->head + 1) % VM_COUNTERS_HISTORY;
	if (c->nhist < VM_COUNTERS_HISTORY)
		c->nhist++;
	vm_counters_changed(c);
}

void vm_counters_policy_miss(struct vm_counters *c)
{
	c->t.policy_misses++;
	vm_counters_changed(c);
}

/* Adds the growth of a reading to *total; a reading that fell restarted. */
static bool vm_counters_fold(uint64_t *total, uint64_t *seen, uint64_t now)
{
	uint64_t add = now >= *seen ? now - *seen : now;

	*seen = now;
	*total += add;
	return add != 0;
}

void vm_counters_observe(struct vm_counters *c, uint64_t guest_released_bytes,
			 const struct proto_stats *stats)
{
	bool changed = vm_counters_fold(&c->t.guest_released_bytes,
					&c->seen_released, guest_released_bytes);

	if (stats) {
		if (!c->seen.stats) {
			/* the first reading of a fresh state: count it all */
			c->seen.stats = true;
			c->seen.vacate_ns = 0;
			c->seen.pages_migrated = 0;
		}
		changed |= vm_counters_fold(&c->t.vacate_ns, &c->seen.vacate_ns,
					    stats->vacate_ns);
		changed |= vm_counters_fold(&c->t.pages_migrated,
					    &c->seen.pages_migrated,
					    stats->pages_migrated);
	}
	if (changed)
		vm_counters_changed(c);
}

void vm_counters_get(const struct vm_counters *c, struct vm_counters_totals *ret_t)
{
	*ret_t = c->t;
}

size_t vm_counters_history(const struct vm_counters *c,
			   struct vm_history_entry *ret_entries, size_t max)
{
	size_t n = c->nhist < max ? c->nhist : max;
	size_t first = (c->head + VM_COUNTERS_HISTORY - c->nhist) % VM_COUNTERS_HISTORY;

	/* the newest n of them, oldest first */
	first = (first + (c->nhist - n)) % VM_COUNTERS_HISTORY;
	for (size_t i = 0; i < n; i++)
		ret_entries[i] = c->hist[(first + i) % VM_COUNTERS_HISTORY];
	return n;
}
