"""A user's model server, written with the standard library only: what
PAI-EAS's image deployment runs in its container and inferq's HTTP
processor calls.

  model_server.py PORT [LOG]

POST on any path answers by what the body asks:
  {"sleep_ms": N}   waits N ms first;
  {"empty": true}   answers 200 with an empty body;
  {"status": N}     answers status N;
  {"crash": true}   exits at once, without answering (a model that kills
                    its server);
  other JSON        answers {"echo": body, "pid": ..., "rid": X-Request-Id};
  a JSON list       (a batch) answers a list, one answer per element;
  anything else     answers b"bytes:" + the body, as bytes.
Each request id received is appended to LOG (one line each) before the
answer, so a test can count executions. It writes its pid to LOG.pid, and
exits when its parent does (so no server outlives the test's inferq).
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
LOG = sys.argv[2] if len(sys.argv) > 2 else None
LOCK = threading.Lock()


def answer_one(body, rid):
    if isinstance(body, dict):
        if body.get("sleep_ms"):
            time.sleep(body["sleep_ms"] / 1000.0)
        if body.get("empty"):
            return None
    return {"echo": body, "pid": os.getpid(), "rid": rid}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, data, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        rid = self.headers.get("X-Request-Id", "")
        if LOG:
            with LOCK, open(LOG, "a") as f:
                f.write(rid + "\n")
        try:
            body = json.loads(raw)
        except ValueError:
            return self.reply(200, b"bytes:" + raw, "application/octet-stream")
        if isinstance(body, dict) and body.get("crash"):
            os._exit(1)
        if isinstance(body, dict) and body.get("status"):
            return self.reply(int(body["status"]), b'{"error": "asked for it"}')
        if isinstance(body, list) and self.headers.get("Content-Type") == "application/json":
            out = [answer_one(b, rid) for b in body]
            return self.reply(200, json.dumps(out).encode())
        out = answer_one(body, rid)
        self.reply(200, b"" if out is None else json.dumps(out).encode())


def orphan_watch(parent):
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=orphan_watch, args=(os.getppid(),), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    if LOG:
        with open(LOG + ".pid", "a") as f:
            f.write(f"{os.getpid()}\n")
    print(f"model server on {PORT}", flush=True)
    server.serve_forever()
