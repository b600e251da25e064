"""Hostile clients against a running server, with its RSS before and after, for docs/benchmarks.md.

    python3 scripts/lib/hostile_clients.py held-bodies --port 8080 --pid PID --path /v1/chat/completions \
        --connections 60 --bytes 8388608 [--header 'authorization: Bearer sk-wrong']
    python3 scripts/lib/hostile_clients.py silent --port 8080 --pid PID --connections 12000

held-bodies: each connection sends a request head declaring BYTES of body, then all of it but the last byte,
and holds on; prints how many got an answer before their body was complete, and the server's RSS.
silent: opens CONNECTIONS connections that send nothing, then times a normal GET /healthz from a new
connection while they are held, and again after the server has closed the silent ones.
"""

import argparse
import resource
import selectors
import socket
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def held_bodies(args):
    before = rss_mb(args.pid)
    head = (
        f"POST {args.path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + "".join(f"{h}\r\n" for h in args.header)
        + f"content-length: {args.bytes}\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    socks, answered_early = [], 0
    for _ in range(args.connections):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.settimeout(0.5)
        s.sendall(head)
        left = args.bytes - 1
        try:
            while left > 0:
                n = s.send(chunk[: min(len(chunk), left)])
                left -= n
        except (socket.timeout, OSError):
            pass
        try:
            if s.recv(64):
                answered_early += 1
        except (socket.timeout, OSError):
            pass
        socks.append(s)
    time.sleep(1)
    peak = rss_mb(args.pid)
    for s in socks:
        s.close()
    time.sleep(1)
    print(f"held-bodies: {args.connections} connections x {args.bytes} B declared, all but the last byte sent: "
          f"{answered_early} answered before their body was complete; RSS {before:.1f} MB before, {peak:.1f} MB "
          f"while held, {rss_mb(args.pid):.1f} MB after")


def healthz_ms(port):
    started = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        answer = s.recv(64).split(b" ")[1].decode()
        s.close()
    except (OSError, IndexError) as e:
        answer = f"error ({e.__class__.__name__})"
    return answer, (time.monotonic() - started) * 1000


def silent(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 1024), hard))
    before = rss_mb(args.pid)
    socks, failed = [], 0
    for _ in range(args.connections):
        try:
            socks.append(socket.create_connection(("127.0.0.1", args.port), timeout=5))
        except OSError:
            failed += 1
    time.sleep(0.5)
    held = rss_mb(args.pid)
    status, ms = healthz_ms(args.port)
    print(f"silent: {len(socks)} idle connections open ({failed} failed to connect), RSS {before:.1f} -> {held:.1f} MB; "
          f"a new client meanwhile: {status} in {ms:.1f} ms")
    deadline = time.monotonic() + args.wait
    open_ones = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        open_ones.register(s, selectors.EVENT_READ)
    closed = 0
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in open_ones.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                key.fileobj.recv(64)  # end of stream, or a last answer: the server let go of it
            except OSError:
                pass  # reset by the server
            open_ones.unregister(key.fileobj)
            closed += 1
    status, ms = healthz_ms(args.port)
    print(f"silent: {closed} of {len(socks)} closed by the server within {args.wait:.0f} s; a new client then: "
          f"{status} in {ms:.1f} ms; RSS {rss_mb(args.pid):.1f} MB")
    for s in socks:
        s.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["held-bodies", "silent"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--connections", type=int, default=60)
    parser.add_argument("--bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--wait", type=float, default=15)
    args = parser.parse_args()
    held_bodies(args) if args.mode == "held-bodies" else silent(args)


if __name__ == "__main__":
    main()
