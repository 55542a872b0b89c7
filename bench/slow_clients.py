#!/usr/bin/env python3
# Many slow HTTP/1.1 downloads from one process (run.ts's many-clients run): each client sets a
# small receive buffer (SO_RCVBUF) and a small MSS (TCP_MAXSEG) before it connects, then reads
# its body at a fixed rate. Node cannot set either on a TCP socket, and both are needed on
# loopback: with the receive buffer alone, the sender's kernel still sizes its send buffer from
# the loopback MSS (64 KiB segments, 10 of them, twice: about 2.6 MiB) and swallows a 1 MiB body
# whole; with an Ethernet-sized MSS too it queues about 140 KiB, so the server sees backpressure
# within the first few hundred KB of each body, as it would from a slow client on the internet.
# Python 3 standard library only; one thread, non-blocking sockets on epoll (selectors).
# Prints one JSON object on stdout when every client has stopped (at --seconds, or on SIGTERM),
# progress lines on stderr.
# usage: slow_clients.py --url http://127.0.0.1:<port>/<path> --clients N --bytes-per-second B
#          --seconds S [--ramp-seconds R] [--rcvbuf BYTES] [--mss BYTES] [--expected-bytes N]
import argparse
import errno
import heapq
import json
import resource
import selectors
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

# A client is let read again once it may take this share of a second's bytes: a few reads a
# second per client, not one per arriving segment.
READ_SLICE_SECONDS = 0.25
MAX_HEAD_BYTES = 16 * 1024
PROGRESS_SECONDS = 1.0


class Client:
    __slots__ = (
        'index', 'sock', 'state', 'started', 'head', 'status', 'expected', 'body', 'received',
        'failure', 'stopped_at', 'registered',
    )

    def __init__(self, index):
        self.index = index
        self.sock = None
        self.state = 'waiting'  # waiting, connecting, reading, done
        self.started = 0.0
        self.head = b''
        self.status = None
        self.expected = None
        self.body = 0
        self.received = 0
        self.failure = None
        self.stopped_at = 0.0
        self.registered = False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--url', required=True)
    parser.add_argument('--clients', type=int, required=True)
    parser.add_argument('--bytes-per-second', type=float, required=True)
    parser.add_argument('--seconds', type=float, required=True)
    parser.add_argument('--ramp-seconds', type=float, default=0.0)
    parser.add_argument('--rcvbuf', type=int, default=4096)
    parser.add_argument('--mss', type=int, default=1460)
    parser.add_argument('--expected-bytes', type=int)
    args = parser.parse_args()

    url = urlsplit(args.url)
    if url.scheme != 'http' or url.hostname is None:
        parser.error('--url must be http://host:port/path')
    address = (url.hostname, url.port or 80)
    request = (
        f'GET {url.path or "/"}{"?" + url.query if url.query else ""} HTTP/1.1\r\n'
        f'Host: {url.netloc}\r\nConnection: close\r\n\r\n'
    ).encode('latin-1')

    # A socket per client, and a few more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.clients + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 64), hard))

    selector = selectors.DefaultSelector()
    clients = [Client(i) for i in range(args.clients)]
    rate = args.bytes_per_second
    slice_bytes = max(1, int(rate * READ_SLICE_SECONDS))
    began = time.monotonic()
    deadline = began + args.seconds
    # (time, sequence, client): a client's start, or the moment it may read again.
    timers = [(began + args.ramp_seconds * i / args.clients, i, c) for i, c in enumerate(clients)]
    heapq.heapify(timers)
    sequence = args.clients
    effective = {'rcvbuf': None, 'mss': None}
    peak_reading = 0
    reading = 0
    next_progress = began + PROGRESS_SECONDS
    # SIGTERM ends every client at once (within PROGRESS_SECONDS), and the summary is printed.
    stop = {'asked': False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))

    def finish(client, failure):
        nonlocal reading
        if client.state == 'done':
            return
        if client.state == 'reading' and client.status == 200:
            reading -= 1
        client.state = 'done'
        client.failure = failure
        client.stopped_at = time.monotonic()
        if client.registered:
            selector.unregister(client.sock)
            client.registered = False
        if client.sock is not None:
            client.sock.close()

    def start(client):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.sock = sock
        # Both before connect(): the window scale and the MSS are settled by the handshake.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, args.mss)
        if effective['rcvbuf'] is None:
            effective['rcvbuf'] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.setblocking(False)
        client.started = time.monotonic()
        client.state = 'connecting'
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            finish(client, errno.errorcode.get(code, str(code)))
            return
        selector.register(sock, selectors.EVENT_WRITE, client)
        client.registered = True

    def allowance(client, now):
        return rate * (now - client.started) - client.received

    def read(client, now):
        nonlocal reading, peak_reading
        may = int(allowance(client, now))
        if may < 1:
            pause(client, now)
            return
        try:
            data = client.sock.recv(min(may, 65536))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            finish(client, errno.errorcode.get(err.errno, 'error'))
            return
        if not data:
            finish(client, 'aborted' if client.status == 200 else 'closed before the head')
            return
        client.received += len(data)
        if client.status is None:
            client.head += data
            end = client.head.find(b'\r\n\r\n')
            if end == -1:
                if len(client.head) > MAX_HEAD_BYTES:
                    finish(client, 'head too long')
                return
            lines = client.head[:end].decode('latin-1').split('\r\n')
            client.status = int(lines[0].split(' ')[1])
            for line in lines[1:]:
                name, _, value = line.partition(':')
                if name.strip().lower() == 'content-length':
                    client.expected = int(value.strip())
            if client.expected is None:
                client.expected = args.expected_bytes
            client.body = len(client.head) - end - 4
            client.head = b''
            if client.status != 200:
                finish(client, str(client.status))
                return
            reading += 1
            peak_reading = max(peak_reading, reading)
        else:
            client.body += len(data)
        if client.expected is not None and client.body >= client.expected:
            finish(client, None)
            return
        if allowance(client, now) < 1:
            pause(client, now)

    def pause(client, now):
        nonlocal sequence
        if client.registered:
            selector.unregister(client.sock)
            client.registered = False
        wake = client.started + (client.received + slice_bytes) / rate
        sequence += 1
        heapq.heappush(timers, (max(wake, now), sequence, client))

    while True:
        now = time.monotonic()
        if now >= deadline or stop['asked']:
            break
        while timers and timers[0][0] <= now:
            _, _, client = heapq.heappop(timers)
            if client.state == 'waiting':
                start(client)
            elif client.state == 'reading' and not client.registered:
                selector.register(client.sock, selectors.EVENT_READ, client)
                client.registered = True
        if not timers and not selector.get_map():
            break
        wait = min(deadline, timers[0][0] if timers else deadline, next_progress) - now
        for key, _ in selector.select(max(0.0, wait)):
            client = key.data
            now = time.monotonic()
            if client.state == 'connecting':
                code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code != 0:
                    finish(client, errno.errorcode.get(code, str(code)))
                    continue
                if effective['mss'] is None:
                    effective['mss'] = client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
                try:
                    # A few dozen bytes: the kernel takes them whole.
                    client.sock.send(request)
                except OSError as err:
                    finish(client, errno.errorcode.get(err.errno, 'error'))
                    continue
                client.state = 'reading'
                selector.modify(client.sock, selectors.EVENT_READ, client)
            elif client.state == 'reading':
                read(client, now)
        if now >= next_progress:
            next_progress += PROGRESS_SECONDS
            started = sum(1 for c in clients if c.state != 'waiting')
            print(
                f'{now - began:5.1f} s: {started} started, {reading} reading a body, '
                f'{sum(1 for c in clients if c.state == "done" and c.failure is None)} complete',
                file=sys.stderr,
                flush=True,
            )

    end = time.monotonic()
    for client in clients:
        if client.state != 'done':
            stopped = client.state != 'waiting'
            finish(client, 'stopped' if stopped else 'not started')
    failures = {}
    for client in clients:
        if client.failure not in (None, 'stopped'):
            failures[client.failure] = failures.get(client.failure, 0) + 1
    responded = [c for c in clients if c.status == 200]
    body_total = sum(c.body for c in responded)
    rates = [c.body / max(1e-3, c.stopped_at - c.started) for c in responded]
    print(json.dumps({
        'clients': args.clients,
        'responded': len(responded),
        'completed': sum(1 for c in clients if c.failure is None),
        'failed': sum(failures.values()),
        'failures': failures,
        'peakReading': peak_reading,
        'meanBytesPerClient': body_total / args.clients,
        'meanBytesPerSecondPerClient': sum(rates) / max(1, len(rates)),
        'receiveBufferBytes': effective['rcvbuf'],
        'mssBytes': effective['mss'],
        'seconds': end - began,
    }))


if __name__ == '__main__':
    main()
