"""The Kubernetes manifests (deploy/kubernetes) and the Alloy side (deploy/alloy), checked
for what a cluster would otherwise catch late: every overlay is rendered with `kubectl
kustomize` (Debian's kubectl, or the one `KUBECTL` names) and the real binary is started
with the rendered arguments, environment and ConfigMap policy."""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

import payloads
from conftest import BIN, ROOT, Lines, wait_for

DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
ALLOY = ROOT / "deploy" / "alloy"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def kubectl() -> str:
    """Debian's kubectl (tests/run.sh installs kubernetes-client), or `KUBECTL`. In CI a
    missing one is a failure; elsewhere the test is skipped, saying why."""
    k = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if k:
        return k
    why = "kubectl is missing (apt-get install kubernetes-client)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why + "; CI=true makes this a failure")


def render(overlay: str) -> dict[tuple[str, str], dict]:
    r = subprocess.run([kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def dockerfile_user() -> tuple[int, int]:
    user = re.findall(r"^USER\s+(\S+)$", DOCKERFILE, re.M)[-1]
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def grace_period_seconds() -> int:
    """frugal's drain after SIGTERM (app.rs GRACE_PERIOD)."""
    m = re.search(r"GRACE_PERIOD: Duration = Duration::from_secs\((\d+)\)", (ROOT / "src" / "app.rs").read_text())
    assert m, "GRACE_PERIOD not found in src/app.rs"
    return int(m.group(1))


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def option(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in `args`."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


class Rendered:
    """One overlay, rendered, and the parts of it the checks read."""

    def __init__(self, overlay: str):
        self.overlay = overlay
        self.docs = render(overlay)
        self.sts = self.one("StatefulSet")
        self.pod = self.sts["spec"]["template"]["spec"]
        (self.container,) = self.pod["containers"]
        self.args = self.container["args"]
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.service = self.docs[("Service", "frugal")]
        policy_path = option(self.args, "--policy")
        assert policy_path, self.args
        self.policy_path = policy_path
        mounts = {m["mountPath"]: m["name"] for m in self.container["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        mount_dir, file = policy_path.rsplit("/", 1)
        cm_name = volumes[mounts[mount_dir]]["configMap"]["name"]
        self.policy_text = self.docs[("ConfigMap", cm_name)]["data"][file]
        self.policy = yaml.safe_load(self.policy_text)
        self.mounts = mounts

    def one(self, kind: str) -> dict:
        (doc,) = [d for (k, _), d in self.docs.items() if k == kind]
        return doc


@pytest.fixture(params=OVERLAYS, scope="module")
def rendered(request) -> Rendered:
    return Rendered(request.param)


def test_there_are_overlays_for_both_shipped_cloud_policies():
    assert {"grafana-cloud-free", "mastodon"} <= set(OVERLAYS)


def test_the_configmap_policy_is_the_repositorys(rendered):
    """kustomize reads no file outside the overlay: its policy is a copy, held equal here."""
    assert rendered.policy_text == (ROOT / "policies" / f"{rendered.overlay}.yaml").read_text()


def test_the_policy_is_mounted_so_an_edit_reaches_the_pod_and_reloads(rendered):
    """A subPath mount never sees a ConfigMap update, and a name with kustomize's hash
    suffix would roll the pod on every edit instead of reloading it."""
    mount_dir = rendered.policy_path.rsplit("/", 1)[0]
    (mount,) = [m for m in rendered.container["volumeMounts"] if m["mountPath"] == mount_dir]
    assert "subPath" not in mount and mount.get("readOnly") is True
    kust = yaml.safe_load((DEPLOY / "overlays" / rendered.overlay / "kustomization.yaml").read_text())
    assert kust["generatorOptions"]["disableNameSuffixHash"] is True
    assert ("ConfigMap", "frugal-policy") in rendered.docs


def test_ports_match_the_service_and_the_policys_listen_addresses(rendered):
    listen = rendered.policy["listen"]
    want = {"otlp-http": port_of(listen["http"]), "otlp-grpc": port_of(listen["grpc"]),
            "admin": port_of(listen["admin"])}
    # No --listen-* argument overrides the policy's addresses.
    assert not [a for a in rendered.args if a.startswith("--listen")], rendered.args
    assert rendered.ports == want
    svc = {p["name"]: p for p in rendered.service["spec"]["ports"]}
    assert set(svc) == set(want)
    for name, p in svc.items():
        target = p["targetPort"]
        assert rendered.ports[target if isinstance(target, str) else name] == want[name]
        if isinstance(target, int):
            assert target == want[name]
        assert p["port"] == want[name], "Alloy and the README address frugal.frugal.svc on the policy's ports"
    assert rendered.service["spec"]["selector"].items() <= rendered.sts["spec"]["template"]["metadata"]["labels"].items()
    headless = rendered.docs[("Service", rendered.sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    ann = rendered.sts["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == want["admin"]
    assert ann["prometheus.io/path"] == "/metrics"


def test_one_replica_its_store_on_a_claim_at_the_data_dir(rendered):
    assert rendered.sts["spec"]["replicas"] == 1, "the budget lives in one store"
    data_dir = option(rendered.args, "--data-dir") or rendered.policy.get("store", {}).get("data_dir")
    (claim,) = rendered.sts["spec"]["volumeClaimTemplates"]
    assert rendered.mounts.get(data_dir) == claim["metadata"]["name"], (data_dir, rendered.mounts)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_pod_runs_as_the_images_user_non_root_on_a_read_only_root(rendered):
    uid, gid = dockerfile_user()
    sc = rendered.pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid)
    assert sc["runAsNonRoot"] is True and uid != 0
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    csc = rendered.container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    # Every path frugal writes is a volume: the data dir; the policy mount is read-only.
    writable = [m for m in rendered.container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == [option(rendered.args, "--data-dir")]


def test_stopping_outlasts_the_prestop_and_the_drain(rendered):
    pre = rendered.container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert rendered.pod["terminationGracePeriodSeconds"] > pre + grace_period_seconds()


def test_resources_are_sized_as_benchmarks_md_says(rendered):
    res = rendered.container["resources"]
    assert res["limits"]["memory"] == "768Mi", "max_in_flight (256MiB default) + 512MiB (BENCHMARKS.md)"
    assert {"cpu", "memory"} <= set(res["requests"])


def test_every_variable_the_policy_needs_comes_from_the_pod(rendered):
    refs = re.findall(r"\$\{([A-Za-z0-9_]+)(:-[^}]*)?\}", rendered.policy_text)
    # Commented-out lines (webhook examples) are not the policy.
    live = "\n".join(line.split("#", 1)[0] for line in rendered.policy_text.splitlines())
    required = {n for n, d in refs if not d and f"${{{n}}}" in live}
    env = {e["name"]: e for e in rendered.container.get("env", [])}
    missing = required - set(env)
    assert not missing, f"the policy needs {missing} from the environment"
    for n in required:
        ref = env[n].get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert not ref.get("optional"), f"{n} is required by the policy"


def test_the_real_binary_starts_with_the_rendered_pod_and_answers_its_probes(rendered, standin):
    """frugal started as the pod would start it: the image's entrypoint with the rendered
    arguments, the rendered environment (the Secret's keys filled with test values), the
    ConfigMap's policy at its mount path and the claim at its own (both remapped to a
    directory here), as the pod's user with the fsGroup's group. Only the listen addresses
    are moved to free loopback ports, so tests can run side by side."""
    uid, gid = dockerfile_user()
    base = Path(tempfile.mkdtemp(prefix="frugal-k8s-"))
    os.chmod(base, 0o755)
    remap = {}
    for mount_path, name in rendered.mounts.items():
        local = base / name
        local.mkdir()
        remap[mount_path] = str(local)
    policy_dir = rendered.policy_path.rsplit("/", 1)[0]
    (Path(remap[policy_dir]) / rendered.policy_path.rsplit("/", 1)[1]).write_text(rendered.policy_text)
    data = Path(remap[option(rendered.args, "--data-dir")])
    # fsGroup: the volume belongs to the group, setgid, group-writable.
    os.chown(data, 0, gid)
    os.chmod(data, 0o2775)

    def local(a: str) -> str:
        for mount_path, path in remap.items():
            a = a.replace(mount_path, path)
        return a

    entry = re.findall(r"^ENTRYPOINT\s+\[\"([^\"]+)\"\]", DOCKERFILE, re.M)[-1]
    assert entry == "/usr/local/bin/frugal"
    secrets = {}
    env = {"PATH": os.environ["PATH"]}
    for e in rendered.container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        if ref.get("optional"):
            continue  # absent from a Secret made as the README makes it
        secrets[ref["key"]] = {
            "GRAFANA_CLOUD_OTLP_ENDPOINT": standin.url,
            "GRAFANA_CLOUD_INSTANCE_ID": "123456",
            "GRAFANA_CLOUD_API_TOKEN": "glc_test_token",
        }[ref["key"]]
        env[e["name"]] = secrets[ref["key"]]
    args = [str(BIN), *map(local, rendered.args),
            "--listen-http", "127.0.0.1:0", "--listen-grpc", "127.0.0.1:0", "--listen-admin", "127.0.0.1:0"]
    os.chmod(BIN.parent, 0o755)
    proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}", *args],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc.stderr)
        m = lines.wait_for(r'"message":"frugal listening".*"http":"([^"]+)".*"admin":"([^"]+)"', timeout=20)
        http, admin = m.group(1), m.group(2)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = rendered.container[probe]["httpGet"]
            assert get["port"] == "admin" or get["port"] == rendered.ports["admin"]
            r = requests.get(f"http://{admin}{get['path']}", timeout=5)
            assert r.status_code == 200, (probe, r.status_code, r.text)
        assert rendered.container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert rendered.container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # The credentials reach upstream: a trace goes through with the Secret's values.
        OTLPSpanExporter(endpoint=f"http://{http}/otlp/v1/traces").export(payloads.spans(random.Random(3), 5))
        # (The Mastodon policy tail-samples: the trace leaves once it is decided.)
        wait_for(lambda: standin.of("traces"), timeout=20, what="the trace upstream")
        (got,) = standin.of("traces")
        token = base64.b64encode(b"123456:glc_test_token").decode()
        assert got.headers.get("authorization") == f"Basic {token}"
        # The store is on the claim, written as the pod's user.
        assert any(p.stat().st_uid == uid for p in data.iterdir())
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


# --- the Alloy side --------------------------------------------------------------------

def alloy_blocks(text: str) -> dict[str, str]:
    """Each top-level `component "label" { ... }` block of an Alloy file, by `component.label`
    (comments removed; braces counted, strings respected)."""
    text = re.sub(r'(?m)^\s*//.*$', "", text)
    blocks = {}
    for m in re.finditer(r'(?m)^([a-z_.]+) "([a-z_]+)" \{', text):
        depth, i, in_str = 0, m.end() - 1, False
        while True:
            c = text[i]
            if c == '"' and text[i - 1] != "\\":
                in_str = not in_str
            elif not in_str and c == "{":
                depth += 1
            elif not in_str and c == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        blocks[f"{m.group(1)}.{m.group(2)}"] = text[m.end():i]
    return blocks


def attr(block: str, name: str) -> str:
    m = re.search(rf'\b{name}\s*=\s*"([^"]*)"', block)
    assert m, f"{name} not in {block}"
    return m.group(1)


def test_alloy_sends_every_signal_to_frugals_service():
    r = Rendered("mastodon")
    ns = r.docs[("Namespace", "frugal")]["metadata"]["name"]
    svc = r.service["metadata"]["name"]
    http_port = {p["name"]: p["port"] for p in r.service["spec"]["ports"]}["otlp-http"]
    blocks = alloy_blocks((ALLOY / "config.alloy").read_text())
    want = {
        "otelcol.exporter.otlphttp.frugal": ("endpoint", "/otlp"),
        "prometheus.remote_write.frugal": ("url", "/api/prom/push"),
        "loki.write.frugal": ("url", "/loki/api/v1/push"),
    }
    for block, (key, path) in want.items():
        u = urlsplit(attr(blocks[block], key))
        assert (u.scheme, u.hostname, u.port, u.path) == ("http", f"{svc}.{ns}.svc", http_port, path), block
    # Every pipeline ends at frugal, never at Grafana Cloud directly.
    text = (ALLOY / "config.alloy").read_text()
    assert "grafana.net" not in text and "basic_auth" not in text
    batch = blocks["otelcol.processor.batch.default"]
    for signal in ("traces", "logs", "metrics"):
        assert re.search(rf"{signal}\s*=\s*\[otelcol\.exporter\.otlphttp\.frugal\.input\]", batch), signal
    assert "loki.write.frugal.receiver" in blocks["loki.source.kubernetes.pods"]
    # frugal's /metrics: the pod's annotations, kept by namespace and name, to remote write.
    scrape = blocks["prometheus.scrape.frugal"]
    assert "prometheus.remote_write.frugal.receiver" in scrape
    relabel = blocks["discovery.relabel.frugal"]
    assert f'regex         = "{ns};{r.sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]}"' in relabel
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" in relabel


def test_the_alloy_chart_values_expose_the_receivers_ports_and_mount_the_config():
    values = yaml.safe_load((ALLOY / "values.yaml").read_text())
    blocks = alloy_blocks((ALLOY / "config.alloy").read_text())
    receiver = blocks["otelcol.receiver.otlp.default"]
    listening = {int(p) for p in re.findall(r'endpoint\s*=\s*"0\.0\.0\.0:(\d+)"', receiver)}
    exposed = {p["port"] for p in values["alloy"]["extraPorts"]}
    assert listening == exposed == {4317, 4318}
    assert all(p["targetPort"] == p["port"] for p in values["alloy"]["extraPorts"])
    cm = values["alloy"]["configMap"]
    assert cm == {"create": False, "name": "alloy-config", "key": "config.alloy"}
    assert "--from-file=config.alloy=deploy/alloy/config.alloy" in (ALLOY / "values.yaml").read_text()
    # Mastodon sends to Alloy's Service on the OTLP/HTTP port (Ruby: http/protobuf only).
    env = yaml.safe_load((ALLOY / "mastodon-env.yaml").read_text())["data"]
    u = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (u.hostname, u.port) == ("grafana-alloy.alloy.svc.cluster.local", 4318)
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME_PREFIX"] == "mastodon-prod"


def test_the_mastodon_env_merges_into_an_existing_env_configmap(tmp_path):
    """The README's `kubectl patch --type merge --patch-file` (run here with `--local`, no
    cluster) sets the OpenTelemetry keys and keeps the instance's own."""
    existing = tmp_path / "mastodon-env.yaml"
    existing.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "mastodon-env", "namespace": "mastodon"},
                                        "data": {"LOCAL_DOMAIN": "example.social",
                                                 "OTEL_EXPORTER_OTLP_ENDPOINT": "http://old:4318"}}))
    readme = (ROOT / "README.md").read_text()
    assert "kubectl -n mastodon patch configmap mastodon-env --type merge --patch-file deploy/alloy/mastodon-env.yaml" \
        in readme
    r = subprocess.run([kubectl(), "patch", "--local", "-f", str(existing), "--type", "merge", "--patch-file",
                        str(ALLOY / "mastodon-env.yaml"), "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout)["data"]
    want = yaml.safe_load((ALLOY / "mastodon-env.yaml").read_text())["data"]
    assert data == {"LOCAL_DOMAIN": "example.social", **want}
