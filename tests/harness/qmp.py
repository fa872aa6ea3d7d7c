"""A minimal synchronous QMP client for the test harness.

Events that arrive while a command waits for its reply are kept in
`events`, in arrival order, so a test can look for them afterwards.
"""
import json

from .unixsock import connect_unix


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30.0):
        self.sock = connect_unix(path, timeout)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        self.events = []
        self._next_id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"no QMP greeting: {greeting!r}")
        self.command("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise QMPError("QMP connection closed")
        return json.loads(line)

    def command(self, name, **args):
        self._next_id += 1
        msg = {"execute": name, "id": self._next_id}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                raise QMPError(f"{name}: {reply['error'].get('desc')}")
            return reply.get("return")

    def hmp(self, command_line):
        return self.command("human-monitor-command", **{"command-line": command_line})

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass
