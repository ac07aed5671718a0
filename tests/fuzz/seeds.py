#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/seed-*.

Each OTLP input is one selector byte and a body: the selector's high nibble picks the
Content-Encoding (0-10 none, 11 gzip, 12 zstd, 13 deflate, 14 identity, 15 an unknown
one), the selector modulo 3 the signal (0 traces, 1 logs, 2 metrics); see
fuzz_targets/common.rs. Protobuf is written by hand below (no dependencies); zstd needs
the `zstd` command, and is skipped without it. The files are committed; run this again
only to change them: python3 tests/fuzz/seeds.py
"""

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")

# --- a minimal protobuf writer -------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def vint(field, n):
    return key(field, 0) + varint(n)


def sint(field, n):
    return key(field, 0) + varint((n << 1) ^ (n >> 63))


def f64(field, n):
    return key(field, 1) + struct.pack("<Q", n)


def sf64(field, n):
    return key(field, 1) + struct.pack("<q", n)


def dbl(field, x):
    return key(field, 1) + struct.pack("<d", x)


def f32(field, n):
    return key(field, 5) + struct.pack("<I", n)


def ld(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return key(field, 2) + varint(len(payload)) + payload


def msg(field, *parts):
    return ld(field, b"".join(parts))


def packed_f64(field, values):
    return ld(field, b"".join(struct.pack("<Q", v) for v in values))


def packed_dbl(field, values):
    return ld(field, b"".join(struct.pack("<d", v) for v in values))


def packed_varint(field, values):
    return ld(field, b"".join(varint(v) for v in values))


# AnyValue and KeyValue (opentelemetry/proto/common/v1/common.proto).
def s(v):
    return ld(1, v)


def kv(field, k, value_parts):
    return msg(field, ld(1, k), msg(2, value_parts))


def attrs(field):
    return b"".join(
        [
            kv(field, "service.name", s("web")),
            kv(field, "http.route", s("/inbox")),
            kv(field, "b", vint(2, 1)),
            kv(field, "i", vint(3, 42)),
            kv(field, "d", dbl(4, 1.5)),
            kv(field, "a", msg(5, msg(1, s("x")), msg(1, vint(3, 7)))),
            kv(field, "k", msg(6, kv(1, "n", s("v")), kv(1, "m", msg(6, kv(1, "deep", vint(2, 0)))))),
            kv(field, "y", ld(7, b"\x01\x02\x03")),
            msg(field, ld(1, "no-value")),
        ]
    )


def resource(field, service="mastodon-prod/web"):
    return msg(field, msg(1, ld(1, "service.name"), msg(2, s(service))), attrs(1), vint(2, 1))


def scope(field):
    return msg(field, ld(1, "io.opentelemetry.rails"), ld(2, "0.1"), attrs(3), vint(4, 0))


TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
T0 = 1_544_712_660_000_000_000


def span(name, status_code, trace_state="", parent=b"", kind=2, seconds=1):
    parts = [
        ld(1, TRACE_ID),
        ld(2, SPAN_ID),
        ld(4, parent),
        ld(5, name),
        vint(6, kind),
        f64(7, T0),
        f64(8, T0 + seconds * 1_000_000_000),
        attrs(9),
        vint(10, 1),
        msg(11, f64(1, T0 + 1), ld(2, "exception"), attrs(3)),
        msg(13, ld(1, TRACE_ID), ld(2, SPAN_ID[::-1]), ld(3, "ot=th:8"), attrs(4), f32(6, 1)),
        msg(15, ld(2, "boom"), vint(3, status_code)),
        f32(16, 257),
    ]
    if trace_state:
        parts.append(ld(3, trace_state))
    return msg(2, *parts)


def traces():
    spans = [
        span("GET /health", 0),
        span("POST /inbox", 2, trace_state="ot=th:c;rv:0123456789abcd", parent=SPAN_ID),
        span("ActivityPub::DeliveryWorker", 1, kind=4, seconds=3),
    ]
    return msg(
        1,
        resource(1),
        msg(2, scope(1), *spans, ld(3, "https://opentelemetry.io/schemas/1.21.0")),
        msg(2, b""),
    ) + msg(1, resource(1, "mastodon-prod/sidekiq"), msg(2, span("PerformJob", 0, kind=5)))


def logs():
    record = lambda body, sev, text: msg(
        2,
        f64(1, T0),
        f64(11, T0 + 5),
        vint(2, sev),
        ld(3, text),
        msg(5, body),
        attrs(6),
        vint(7, 1),
        f32(8, 1),
        ld(9, TRACE_ID),
        ld(10, SPAN_ID),
        ld(12, "app.event"),
    )
    return msg(
        1,
        resource(1),
        msg(
            2,
            scope(1),
            record(s("GET /health 200"), 9, "INFO"),
            record(msg(6, kv(1, "msg", s("hi")), kv(1, "n", dbl(4, 1e-7))), 13, "WARN"),
            record(msg(5, msg(1, vint(3, 1)), msg(1, dbl(4, 2.5e21))), 17, "ERROR"),
            record(ld(7, b"\xff\x00"), 0, ""),
        ),
    )


def metrics():
    number = lambda as_value: msg(1, attrs(7), f64(2, T0), f64(3, T0 + 60), as_value, vint(8, 1),
                                  msg(5, attrs(7), f64(2, T0), dbl(3, 0.5), ld(4, SPAN_ID), ld(5, TRACE_ID)))
    gauge = msg(5, number(dbl(4, 2.5)), number(sf64(6, -5)))
    total = msg(7, number(sf64(6, 10)), vint(2, 2), vint(3, 1))
    histogram = msg(9, msg(1, attrs(9), f64(2, T0), f64(3, T0 + 60), f64(4, 3), dbl(5, 6.5),
                           packed_f64(6, [1, 2]), packed_dbl(7, [1.0]), dbl(11, 1.0), dbl(12, 4.0)),
                    vint(2, 1))
    exponential = msg(10, msg(1, attrs(1), f64(2, T0), f64(3, T0 + 60), f64(4, 5), dbl(5, 12.0),
                              sint(6, -3), f64(7, 1), msg(8, sint(1, -2), packed_varint(2, [1, 2, 1])),
                              msg(9, sint(1, 0), packed_varint(2, [])), dbl(14, 1e-9)),
                      vint(2, 2))
    summary = msg(11, msg(1, attrs(7), f64(2, T0), f64(3, T0 + 60), f64(4, 4), dbl(5, 10.0),
                          msg(6, dbl(1, 0.5), dbl(2, 2.0)), msg(6, dbl(1, 0.99), dbl(2, 4.0))))
    metric = lambda name, data: msg(2, ld(1, name), ld(2, "what it measures"), ld(3, "s"), data,
                                    attrs(12))
    return msg(
        1,
        resource(1),
        msg(2, scope(1), metric("g", gauge), metric("s", total), metric("h", histogram),
            metric("e", exponential), metric("q", summary), metric("none", b"")),
    )


# --- OTLP/JSON -----------------------------------------------------------------------


def json_attrs():
    return [
        {"key": "service.name", "value": {"stringValue": "web"}},
        {"key": "i", "value": {"intValue": "42"}},
        {"key": "j", "value": {"intValue": 43}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {}]}}},
        {"key": "k", "value": {"kvlistValue": {"values": [{"key": "n", "value": {"intValue": "1"}}]}}},
        {"key": "e", "value": {"arrayValue": {}}},
        {"key": "y", "value": {"bytesValue": "AQID"}},
        {"value": {"stringValue": "no key"}},
        {"key": "z"},
    ]


JSON_RESOURCE = {"attributes": json_attrs(), "droppedAttributesCount": "0", "futureField": 1}
JSON_SCOPE = {"name": "s", "version": "1", "attributes": json_attrs()}


def json_traces():
    span = {
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "",
        "traceState": "ot=th:8",
        "flags": "257",
        "name": "POST /inbox",
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712663000000000,
        "attributes": json_attrs(),
        "droppedAttributesCount": 1,
        "events": [{"timeUnixNano": "1544712660500000000", "name": "e", "attributes": json_attrs()}],
        "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "EEE19B7EC3C1B175",
                   "flags": 1, "unknownLinkField": {"x": [1, 2]}}],
        "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
        "unknownSpanField": None,
    }
    child = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
             "name": "GET /health", "kind": 3, "status": {"code": 1}}
    return {"resourceSpans": [{"resource": JSON_RESOURCE, "schemaUrl": "",
                               "scopeSpans": [{"scope": JSON_SCOPE, "spans": [span, child]}]}]}


def json_logs():
    records = [
        {"timeUnixNano": "1", "observedTimeUnixNano": 2, "severityNumber": "13", "severityText": "WARN",
         "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "hi"}}]}},
         "attributes": json_attrs(), "traceId": "5B8EFFF798038103D269B633813FC60C",
         "spanId": "eee19b7ec3c1b174", "flags": 1, "eventName": "app.event"},
        {"severityNumber": "SEVERITY_NUMBER_ERROR2", "body": {"intValue": "7"}},
        {"severityNumber": 9, "body": {"stringValue": "GET /health"}, "droppedAttributesCount": "2"},
    ]
    return {"resourceLogs": [{"resource": JSON_RESOURCE,
                              "scopeLogs": [{"scope": JSON_SCOPE, "logRecords": records}]}]}


def json_metrics():
    metrics = [
        {"name": "h", "unit": "s", "histogram": {"aggregationTemporality": "2", "dataPoints": [
            {"startTimeUnixNano": "1", "timeUnixNano": "2", "count": "3", "sum": "6.5",
             "bucketCounts": ["1", "2"], "explicitBounds": [1.0], "min": 1, "max": "4",
             "attributes": json_attrs()}]}},
        {"name": "g", "gauge": {"dataPoints": [{"asInt": "5", "timeUnixNano": 3},
                                               {"asDouble": "2.5", "exemplars": [
                                                   {"asDouble": 1, "spanId": "eee19b7ec3c1b174",
                                                    "traceId": "5b8efff798038103d269b633813fc60c"}]}]}},
        {"name": "s", "sum": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                              "isMonotonic": True, "dataPoints": [{"asDouble": 1}]}},
        {"name": "e", "exponentialHistogram": {"aggregationTemporality": 1, "dataPoints": [
            {"count": "5", "sum": 12.0, "scale": -3, "zeroCount": "1", "zeroThreshold": 1e-9,
             "positive": {"offset": -2, "bucketCounts": ["1", 2, "1"]}, "negative": {}}]}},
        {"name": "q", "summary": {"dataPoints": [{"count": "4", "sum": 10, "quantileValues": [
            {"quantile": 0.5, "value": 2}, {"quantile": "0.99", "value": "4"}]}]}},
    ]
    return {"resourceMetrics": [{"resource": JSON_RESOURCE,
                                 "scopeMetrics": [{"scope": JSON_SCOPE, "metrics": metrics}]}]}


# --- writing -------------------------------------------------------------------------

NONE, GZIP, ZSTD, DEFLATE = 0, 11, 12, 13


def selector(encoding, signal):
    """The first byte whose high nibble is `encoding` and whose value modulo 3 is `signal`."""
    for low in range(16):
        b = encoding << 4 | low
        if b % 3 == signal:
            return bytes([b])
    raise ValueError


def compress(encoding, body):
    if encoding == GZIP:
        return gzip.compress(body, mtime=0)
    if encoding == DEFLATE:
        return zlib.compress(body)
    if encoding == ZSTD:
        return subprocess.run(["zstd", "-q", "-c"], input=body, capture_output=True, check=True).stdout
    return body


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, "seed-" + name)
    with open(path, "wb") as f:
        f.write(data)


def main():
    for target in ("otlp_protobuf", "otlp_json", "policy"):
        os.makedirs(os.path.join(HERE, "corpus", target), exist_ok=True)
    bodies = {
        "otlp_protobuf": [traces(), logs(), metrics()],
        "otlp_json": [json.dumps(b, separators=(",", ":")).encode()
                      for b in (json_traces(), json_logs(), json_metrics())],
    }
    encodings = [(NONE, "plain"), (GZIP, "gzip"), (DEFLATE, "deflate")]
    if shutil.which("zstd"):
        encodings.append((ZSTD, "zstd"))
    for target, per_signal in bodies.items():
        for signal, (name, body) in enumerate(zip(("traces", "logs", "metrics"), per_signal)):
            write(target, name, selector(NONE, signal) + body)
        # Each signal compressed one way, so every decoder starts from a valid stream.
        for signal, (encoding, label) in enumerate(encodings[1:]):
            body = per_signal[signal % 3]
            write(target, f"{label}", selector(encoding, signal % 3) + compress(encoding, body))
    # The example policies, and the README's full example (every key).
    for name in sorted(os.listdir(os.path.join(ROOT, "policies"))):
        if name.endswith(".yaml"):
            shutil.copy(os.path.join(ROOT, "policies", name),
                        os.path.join(HERE, "corpus", "policy", "seed-" + name[:-5]))
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = f.read().split("```yaml\n")
    full = next(b.split("```")[0] for b in blocks if "max_request_size" in b)
    write("policy", "readme", full.encode())
    write_policy_dict()


def dict_entry(word):
    """A libFuzzer dictionary entry: quoted, escaping only backslash, quote and bytes (hex)."""
    out = ""
    for c in word:
        if c in '\\"':
            out += "\\" + c
        elif " " <= c <= "~":
            out += c
        else:
            out += "\\x%02x" % ord(c)
    return '"' + out + '"'


def write_policy_dict():
    """Every quoted word in the policy loader (keys and allowed values), and YAML syntax."""
    words = set()
    for directory, _, files in os.walk(os.path.join(ROOT, "src", "policy")):
        for name in files:
            if name.endswith(".rs"):
                with open(os.path.join(directory, name)) as f:
                    words.update(re.findall(r'"([A-Za-z_][A-Za-z0-9_.]{1,30})"', f.read()))
    syntax = [": ", "- ", "{", "}", "[", "]", ", ", "\n  ", "&a ", "*a", "!!str ", "<<: ", "${", ":-",
              "$$", "%", "GB", "GiB", "MiB", "kB/s", "ms", "s", "m", "h", "d", "w", "~", "null", "'", "\""]
    lines = [dict_entry(w) for w in sorted(words) + syntax]
    with open(os.path.join(HERE, "policy.dict"), "w") as f:
        f.write("# libFuzzer dictionary for the policy target (written by seeds.py)\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
