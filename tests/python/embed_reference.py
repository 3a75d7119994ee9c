#!/usr/bin/env python3
"""Reference sentence embeddings, computed independently of inferq: Python
ONNX Runtime and Hugging Face tokenizers on the same model files, one text at
a time (no batching, no padding), mean pooling over the attention mask, L2
normalisation. Also a bare-model speed measurement for BENCHMARKS.md.

usage:
  embed_reference.py MODEL TOKENIZER MAXLEN < texts.json  > embeddings.json
  embed_reference.py MODEL TOKENIZER MAXLEN --bench SECONDS < texts.json
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def load(model, tokenizer, max_len):
    tok = Tokenizer.from_file(tokenizer)
    tok.no_padding()
    tok.enable_truncation(max_len)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return tok, sess, names


def embed(tok, sess, names, texts):
    encs = tok.encode_batch(texts)
    n, length = len(encs), max(len(e.ids) for e in encs)
    ids = np.zeros((n, length), dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    types = np.zeros((n, length), dtype=np.int64)
    for r, e in enumerate(encs):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = e.attention_mask
        types[r, : len(e.ids)] = e.type_ids
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = types
    hidden = sess.run(["last_hidden_state"], feed)[0]
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled / norms


def main():
    model, tokenizer, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = json.load(sys.stdin)
    tok, sess, names = load(model, tokenizer, max_len)
    if "--bench" in sys.argv:
        secs = float(sys.argv[sys.argv.index("--bench") + 1])
        for batch in (1, 8, 32):
            embed(tok, sess, names, texts[:batch])
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < secs:
                embed(tok, sess, names, [texts[(done + i) % len(texts)] for i in range(batch)])
                done += batch
            print(json.dumps({"runtime": "python-onnxruntime", "batch": batch,
                              "sentences_per_s": round(done / (time.perf_counter() - start), 1)}))
        return
    out = [embed(tok, sess, names, [t])[0].tolist() for t in texts]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
