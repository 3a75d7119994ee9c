"""Runs the eas-prediction SDK against an inferq gateway.

  eas_sdk.py suite ENDPOINT SERVICE TOKEN
      The SDK's own test module (eas_prediction/test_queue_client.py, as
      shipped in the PyPI package), in full, with its module globals pointed
      at the gateway. Exit status 0 only when every test passed; prints the
      time the whole module took and the time of each test.

  eas_sdk.py subscribe ENDPOINT SERVICE TOKEN
      The EAS documentation's subscription example, as written there: a
      QueueClient on <svc>/sink, watch(0, 5, auto_commit=False), print and
      commit each item, stop after 10, close the watcher. Prints one JSON
      line per item: {"index", "requestId", "data"}.

  eas_sdk.py put ENDPOINT SERVICE TOKEN COUNT [PAYLOAD]
      Puts COUNT items into the input queue; prints their request ids, one
      per line.
"""
import json
import sys
import time
import unittest

from eas_prediction import QueueClient


def suite(endpoint, service, token):
    import eas_prediction.test_queue_client as t

    t.QueueEndpoint = endpoint
    t.QueueName = service
    t.SinkQueueName = service + "/sink"
    t.QueueToken = token

    class Timed(unittest.TextTestResult):
        def startTest(self, test):
            self._t0 = time.monotonic()
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            print(f"timing {test._testMethodName} {time.monotonic() - self._t0:.3f}s", flush=True)

    started = time.monotonic()
    loaded = unittest.defaultTestLoader.loadTestsFromModule(t)
    result = unittest.TextTestRunner(verbosity=2, resultclass=Timed).run(loaded)
    print(f"timing module {time.monotonic() - started:.3f}s", flush=True)
    print(f"ran {result.testsRun} failures {len(result.failures)} errors {len(result.errors)}", flush=True)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


def subscribe(endpoint, service, token):
    # The example from the EAS documentation (asynchronous inference,
    # "subscribe to the results"), unchanged but for the endpoint and token.
    sink_queue = QueueClient(endpoint, service + "/sink")
    sink_queue.set_token(token)
    sink_queue.init()

    watcher = sink_queue.watch(0, 5, auto_commit=False)
    i = 0
    for x in watcher.run():
        print(json.dumps({"index": x.index, "requestId": x.tags["requestId"],
                          "data": x.data.decode("utf-8")}), flush=True)
        sink_queue.commit(x.index)
        i += 1
        if i == 10:
            break
    watcher.close()
    return 0


def put(endpoint, service, token, count, payload='[{"age": 30, "income": 5200}]'):
    queue = QueueClient(endpoint, service)
    queue.set_token(token)
    queue.init()
    for _ in range(int(count)):
        index, request_id = queue.put(payload)
        print(request_id, flush=True)
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"suite": suite, "subscribe": subscribe, "put": put}[cmd](*args))
