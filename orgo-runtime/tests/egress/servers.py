"""The test hosts of the egress tests, run inside a test network namespace.

Serves, on every address of the namespace:
- HTTP on :80 and HTTPS on :443 (`--cert`/`--key`): `host=<Host or SNI> addr=<local address>`;
- raw TCP on :9000: `tcp-ok <local address>` (then `bulk N` sends N MiB);
  UDP on :9001: `udp-ok <local address>`;
- a sink on :9002: reads a line `N`, then N bytes, and answers `sink-mbps R`, the
  rate from the first byte to the last;
- DNS (UDP) on `--dns ADDR:53`: A records from `--zone name=ip` (a `*.` name
  matches subdomains), NXDOMAIN otherwise; no AAAA records.
Writes `ready` on stdout once everything listens. Test traffic only.
"""

import argparse
import http.server
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time


class Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sni = getattr(self.request, "orgo_sni", None)
        host = sni or self.headers.get("Host", "")
        body = f"host={host} addr={self.request.getsockname()[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def https(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember(sock, name, _ctx):
        sock.orgo_sni = name

    context.sni_callback = remember
    server = Threaded(("0.0.0.0", 443), Http)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def tcp():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.listen(64)

    def serve():
        while True:
            conn, _ = listener.accept()
            try:
                conn.sendall(f"tcp-ok {conn.getsockname()[0]}\n".encode())
                # Bulk: a client that sends `bulk N` gets N MiB.
                conn.settimeout(2)
                try:
                    line = conn.recv(64)
                except OSError:
                    line = b""
                if line.startswith(b"bulk "):
                    chunk = b"x" * 65536
                    for _ in range(int(line.split()[1]) * 16):
                        conn.sendall(chunk)
            except OSError:
                pass
            finally:
                conn.close()

    return serve


def sink():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9002))
    listener.listen(16)

    def one(conn):
        try:
            conn.settimeout(120)
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            line, rest = data.split(b"\n", 1)
            want = int(line)
            got, first = len(rest), time.monotonic()
            while got < want:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                got += len(chunk)
            seconds = max(time.monotonic() - first, 1e-6)
            conn.sendall(f"sink-mbps {got * 8 / 1e6 / seconds:.2f} {got}\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    def serve():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    return serve


def udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO

    sock.bind(("0.0.0.0", 9001))

    def serve():
        while True:
            data, ancillary, _, peer = sock.recvmsg(2048, 256)
            local = None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IP and kind == 8:
                    local = value[8:12]
            # The reply leaves from the address the query came to.
            info = [(socket.IPPROTO_IP, 8, struct.pack("I4s4s", 0, local, local))] if local else []
            text = socket.inet_ntoa(local) if local else "?"
            sock.sendmsg([f"udp-ok {text}\n".encode()], info, 0, peer)

    return serve


def dns(address, zone):
    host, port = address.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))

    def lookup(name):
        name = name.lower().rstrip(".")
        if name in zone:
            return zone[name]
        parts = name.split(".")
        for i in range(1, len(parts)):
            wild = "*." + ".".join(parts[i:])
            if wild in zone:
                return zone[wild]
        return None

    def serve():
        while True:
            query, peer = sock.recvfrom(512)
            if len(query) < 12:
                continue
            (qid,) = struct.unpack(">H", query[:2])
            i, labels = 12, []
            while i < len(query) and query[i] != 0:
                n = query[i]
                labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
            question = query[12 : i + 5]
            qtype = struct.unpack(">H", query[i + 1 : i + 3])[0] if i + 3 <= len(query) else 0
            ip = lookup(".".join(labels))
            if ip is None:
                flags, answers = 0x8183, b""
            elif qtype == 1:
                flags = 0x8180
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(ip)
            else:
                flags, answers = 0x8180, b""
            count = 1 if answers else 0
            header = struct.pack(">HHHHHH", qid, flags, 1, count, 0, 0)
            sock.sendto(header + question + answers, peer)

    return serve


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--dns", required=True)
    parser.add_argument("--zone", action="append", default=[])
    args = parser.parse_args()
    zone = dict(z.split("=", 1) for z in args.zone)
    http_server = Threaded(("0.0.0.0", 80), Http)
    https_server = https(args.cert, args.key)
    serves = [http_server.serve_forever, https_server.serve_forever, tcp(), sink(), udp(), dns(args.dns, zone)]
    for serve in serves:
        threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
