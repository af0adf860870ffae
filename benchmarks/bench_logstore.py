"""Sandbox log store: append rate and entries:list latency over 100k entries (prints figures).

    .venv/bin/python benchmarks/bench_logstore.py
"""
import json
import random
import time
from datetime import UTC, datetime, timedelta

from sandbox.logstore import LogStore, container_entry, request_entry

random.seed(1)
store = LogStore("p")
now = datetime.now(UTC)
N = 100_000
built = []
for i in range(N):
    rev = f"shop-{i % 50:05d}"
    at = now - timedelta(seconds=(N - i) * 0.5)
    if i % 3 == 0:
        e = request_entry(project="p", location="l", service=f"svc{i%5}", revision=rev, method="GET", url="http://x/a",
                          status=random.choice([200, 200, 200, 404, 503]), latency_s=0.01, timestamp=at)
    elif i % 3 == 1:
        e = container_entry(project="p", location="l", service=f"svc{i%5}", revision=rev, stream="stdout",
                            line=json.dumps({"severity": random.choice(["INFO", "ERROR", "DEBUG"]), "message": f"m {i}"}),
                            timestamp=at)
    else:
        e = container_entry(project="p", location="l", service=f"svc{i%5}", revision=rev, stream="stderr",
                            line=random.choice(["ok", "Traceback (most recent call last):"]), timestamp=at)
    built.append(e)
t0 = time.perf_counter()
for e in built:
    store.append(e)
t1 = time.perf_counter()
print(f"append {N} (store only): {t1-t0:.2f}s ({N/(t1-t0):,.0f}/s)")
since = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")

def timed(label, **kw):
    best = 1e9
    for _ in range(3):
        s = time.perf_counter()
        entries, tok = store.list_entries(resource_names=["projects/p"], **kw)
        best = min(best, time.perf_counter() - s)
    print(f"{label}: {best*1000:.1f} ms, {len(entries)} entries, more={tok is not None}")

timed("revision + severity>=ERROR + client ts term, 50/page",
      filter_=f'resource.labels.revision_name="shop-00007" AND severity>=ERROR AND timestamp>="{since}"')
timed("same, desc, 1000/page",
      filter_=f'resource.labels.revision_name="shop-00007" AND severity>=ERROR AND timestamp>="{since}"', order_by="timestamp desc", page_size=1000)
timed("unindexed full scan: httpRequest.status>=500 AND textPayload:nomatch (0 hits)",
      filter_=f'httpRequest.status>=500 AND textPayload:"nomatch" AND timestamp>="{since}"', page_size=1000)
timed("unindexed: severity>=ERROR, 1000/page",
      filter_=f'severity>=ERROR AND timestamp>="{since}"', page_size=1000)
timed("unindexed OR over revisions, sparse: (rev7 OR rev8) AND textPayload:Traceback, 1000/page",
      filter_=f'(resource.labels.revision_name="shop-00007" OR resource.labels.revision_name="shop-00008") AND textPayload:"Traceback" AND timestamp>="{since}"', page_size=1000)
timed("global restriction \"nomatch\" full scan",
      filter_=f'"nomatch" AND timestamp>="{since}"', page_size=1000)
