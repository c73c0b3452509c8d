"""Time from a server process's start to its first successful read, over the raw ZooKeeper
protocol (no client library backoff in the way): connect, handshake, getData(PATH), retried
every 5 ms until it succeeds or LIMIT seconds pass.

Usage: python3 first_read.py HOST:PORT PATH START_EPOCH_SECONDS [LIMIT]
Prints the seconds from START to the first good reply, or exits 1 at the limit.
"""
import socket
import struct
import sys
import time


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock):
    header = recv_exact(sock, 4)
    (length,) = struct.unpack(">i", header)
    return recv_exact(sock, length)


def recv_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def try_read(host, port, path):
    with socket.create_connection((host, port), timeout=2) as sock:
        # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly
        connect = struct.pack(">iqiq", 0, 0, 30000, 0) + struct.pack(">i", 16) + b"\0" * 16
        sock.sendall(frame(connect + b"\0"))
        read_frame(sock)
        encoded = path.encode()
        request = struct.pack(">ii", 1, 4) + struct.pack(">i", len(encoded)) + encoded + b"\0"
        sock.sendall(frame(request))
        reply = read_frame(sock)
        _xid, _zxid, err = struct.unpack(">iqi", reply[:16])
        return err == 0


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    path = sys.argv[2]
    start = float(sys.argv[3])
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 300
    while time.time() - start < limit:
        try:
            if try_read(host, int(port), path):
                print("%.3f" % (time.time() - start))
                return 0
        except (OSError, ConnectionError, struct.error):
            pass
        time.sleep(0.005)
    print("no successful read within %ss" % limit, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
