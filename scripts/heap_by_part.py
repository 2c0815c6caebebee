#!/usr/bin/env python3
"""The gateway's heap at its peak, by part: reads the peak-cost flame graph heaptrack_print
writes and attributes each allocation's stack to the first part of the gateway it passes through
(the order below: the more specific first), printing MB and bytes per pod.

    SCALE_WRAP="heaptrack -o /var/tmp/gw-heap" SCALE_MODES=free python3 scripts/scale.py 5000
    heaptrack_print -f /var/tmp/gw-heap.zst -F /var/tmp/heap-flame.txt --flamegraph-cost-type peak
    python3 scripts/heap_by_part.py /var/tmp/heap-flame.txt 5000

Stacks name functions and source files (release builds keep line tables), not crates, so the
parts are matched by file names; docs/performance.md, "Where the heap goes", has the figures.
Standard library only.
"""

import collections
import sys


def has(*names):
    return lambda frames: any(n in f for f in frames for n in names)


PARTS = [
    ("sim cloud (the emulated provider's own state)",
     lambda fs: has("(whole.rs)")(fs) and has("(client.rs)")(fs)),
    ("ledger", has("(ledger.rs)")),
    ("status schedule (pod/schedule.rs)", has("(schedule.rs)")),
    ("event recorder (kube-runtime)", has("(recorder.rs)")),
    ("cached pods (decoded and packed)", has("(cached_pod.rs)")),
    ("reflector store (kube-runtime)", has("apply_watcher_event")),
    ("watch decoding", has("(reflect.rs)", "(watcher.rs)")),
    ("orphan GC listing", has("(gc.rs)")),
    ("controller queue (kube-runtime scheduler)", has("(scheduler.rs)", "(delay_queue.rs)")),
    ("pod controller's tables and calls (pod.rs)", has("(pod.rs)")),
    ("HTTP and TLS connections", has("(http1.rs)", "(conn.rs)", "(buffers.rs)", "(dispatch.rs)", "(io.rs)")),
    ("threads", has("thread_start", "thread_info")),
]


def main():
    path, pods = sys.argv[1], int(sys.argv[2])
    by_part, total = collections.Counter(), 0
    for line in open(path):
        stack, _, cost = line.rstrip("\n").rpartition(" ")
        frames, cost = stack.split(";"), int(cost)
        total += cost
        part = next((name for name, matches in PARTS if matches(frames)), "other")
        by_part[part] += cost
    print(f"heap at its peak: {total / 1e6:.2f} MB ({total / pods:.0f} B per pod of {pods})")
    for part, cost in by_part.most_common():
        print(f"{cost / 1e6:8.2f} MB {cost / pods:7.0f} B/pod  {part}")


if __name__ == "__main__":
    main()
