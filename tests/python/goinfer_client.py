"""An independent go-infer client, as go-infer's own Python test client works:
builds the envelope, renders the signed string with
json.dumps(sort_keys=True, ensure_ascii=False, separators=(',', ':')) for
objects and str() for other values, signs it with SHA256 or with SM2 from the
`gmssl` package, POSTs it and prints the answer's JSON on stdout.

usage: goinfer_client.py URL SIGNTYPE DATA_JSON [--extra JSON] [--key B64] [--ts N]
                         [--cafile PEM]

An https:// URL is verified with Python's own TLS (OpenSSL) against --cafile.
"""
import argparse
import base64
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.request

from gmssl import sm2, func

APP_ID = "3EA25569454745D01219080B779F021F"
SECRET = "41DF0E6AE27B5282C07EF5124642A352"
SM2_KEY = "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U="


def sign_string(body, secret):
    parts = []
    for k in sorted(body):
        if k in ("signData", "encData", "extra"):
            continue
        v = body[k]
        if isinstance(v, dict):
            v = json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        parts.append("%s=%s" % (k, v))
    parts.append("key=" + secret)
    return "&".join(parts)


def sm2_sign(message, key_b64):
    private_hex = base64.b64decode(key_b64).hex()
    d = int(private_hex, 16)
    signer = sm2.CryptSM2(private_key=private_hex, public_key="")
    public_hex = signer._kg(d, sm2.default_ecc_table["g"])
    signer = sm2.CryptSM2(private_key=private_hex, public_key=public_hex)
    random_hex = func.random_hex(signer.para_len)
    sig_hex = signer.sign_with_sm3(message.encode("utf-8"), random_hex)
    return base64.b64encode(bytes.fromhex(sig_hex)).decode(), public_hex


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("sign_type")
    p.add_argument("data")
    p.add_argument("--extra", default="{}", help="extra top-level fields (JSON object)")
    p.add_argument("--key", default=SM2_KEY)
    p.add_argument("--ts", type=int, default=None)
    p.add_argument("--print-public-key", action="store_true")
    p.add_argument("--cafile", default=None, help="CA certificates (PEM) for https:// URLs")
    a = p.parse_args()

    body = {
        "appId": APP_ID,
        "version": "1",
        "signType": a.sign_type,
        "encType": "plain",
        "timestamp": a.ts if a.ts is not None else int(time.time()),
        "data": json.loads(a.data),
    }
    body.update(json.loads(a.extra))
    s = sign_string(body, SECRET)
    if a.sign_type == "SHA256":
        body["signData"] = base64.b64encode(hashlib.sha256(s.encode("utf-8")).hexdigest().encode()).decode()
    elif a.sign_type == "SM2":
        body["signData"], public_hex = sm2_sign(s, a.key)
        if a.print_public_key:
            print("04" + public_hex, file=sys.stderr)
    req = urllib.request.Request(
        a.url,
        data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=a.cafile) if a.cafile else None
    with urllib.request.urlopen(req, timeout=30, context=context) as resp:
        sys.stdout.write(resp.read().decode("utf-8"))


if __name__ == "__main__":
    main()
