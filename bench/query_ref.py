"""The Python faiss side of bench/query.c (bench_query): the raw FAISS
baseline on the very FAISS files sightline wrote.

usage: query_ref.py QUERIES.npy K BATCH THREADS

It answers commands, one per line on stdin, with one line on stdout:
  open NAME INDEX_DIR   read the images FAISS file named in INDEX_DIR's
                        manifest.json with faiss.read_index -> "ok NTOTAL"
  run NAME NPROBE OUT   search every query, BATCH at a time, k = K, after
                        setting nprobe through faiss.ParameterSpace (NPROBE
                        0: leave as is) -> "ok SECONDS"; the ids go to OUT
                        (raw int64 [nq, K]) unless OUT is "-"
  quit
The timed loop is only the index.search calls over the batches, the same
work bench_query times on sightline's side (sl_store_search per batch).
"""
import json
import sys
import time

import faiss
import numpy as np


def main():
    qpath, k, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    faiss.omp_set_num_threads(threads)
    queries = np.ascontiguousarray(np.load(qpath).astype(np.float32))
    indices = {}
    ps = faiss.ParameterSpace()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "open":
            name, index_dir = cmd[1], cmd[2]
            with open(f"{index_dir}/manifest.json") as f:
                manifest = json.load(f)
            path = f"{index_dir}/{manifest['collections']['images']['file']}"
            indices[name] = faiss.read_index(path)
            print(f"ok {indices[name].ntotal}", flush=True)
        elif cmd[0] == "run":
            index, nprobe, out = indices[cmd[1]], int(cmd[2]), cmd[3]
            if nprobe > 0:
                ps.set_index_parameter(index, "nprobe", nprobe)
            nq = queries.shape[0]
            ids = np.empty((nq, k), dtype=np.int64)
            t0 = time.perf_counter()
            for b0 in range(0, nq, batch):
                _, ids[b0:b0 + batch] = index.search(queries[b0:b0 + batch], k)
            seconds = time.perf_counter() - t0
            if out != "-":
                ids.tofile(out)
            print(f"ok {seconds:.9f}", flush=True)
        else:
            print(f"error unknown command {cmd[0]}", flush=True)


if __name__ == "__main__":
    main()
