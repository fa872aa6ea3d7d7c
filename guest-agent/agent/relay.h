/* SPDX-License-Identifier: GPL-2.0 */
#ifndef AGENT_RELAY_H
#define AGENT_RELAY_H

struct agent_relay;

/*
 * A relay over an open port fd (taken over, closed by agent_relay_free).
 * stats_interval_s: seconds between EVT_STATS frames, 0 for none;
 * meminfo_interval_ms: period of EVT_MEMINFO (version 3 hosts), 0 for none.
 */
int agent_relay_new(int port_fd, unsigned int stats_interval_s,
		    unsigned int meminfo_interval_ms, struct agent_relay **ret_relay);
void agent_relay_free(struct agent_relay *r);

/* fds to poll for POLLIN now, -1 when there is nothing to watch. */
int agent_relay_port_fd(const struct agent_relay *r);
int agent_relay_nl_fd(const struct agent_relay *r);

/* Longest the main loop may sleep before agent_relay_tick() is due. */
int agent_relay_timeout_ms(const struct agent_relay *r);

void agent_relay_port_ready(struct agent_relay *r, short revents);
void agent_relay_nl_ready(struct agent_relay *r);

/* Timers: host reconnect, module (re)connect, statistics, memory signals. */
void agent_relay_tick(struct agent_relay *r);

#endif /* AGENT_RELAY_H */
