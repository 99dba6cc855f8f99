"""Search an index directory's image FAISS file with Python faiss (the
reference implementation): the file named in manifest.json, queries from a
.npy, k neighbours. Writes OUT.ids.npy (int64) and OUT.scores.npy (float32).
usage: faiss_search.py INDEX_DIR QUERIES.npy K OUT"""
import json
import sys

import faiss
import numpy as np

index_dir, qpath, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
manifest = json.load(open(f"{index_dir}/manifest.json"))
index = faiss.read_index(f"{index_dir}/{manifest['collections']['images']['file']}")
q = np.load(qpath).astype(np.float32)
scores, ids = index.search(q, k)
np.save(f"{out}.ids.npy", ids.astype(np.int64))
np.save(f"{out}.scores.npy", scores.astype(np.float32))
