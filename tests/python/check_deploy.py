"""Offline checks of deploy/ that a cluster would otherwise find at run time.

    check_deploy.py kubernetes RENDERED.yaml   (kubectl kustomize's output)
    check_deploy.py dockerfile Dockerfile RENDERED.yaml
    check_deploy.py compose deploy/compose.yaml deploy/nginx-least-conn.conf

`kubernetes` validates every built-in object against the Kubernetes API's
schemas (kubernetes-validate, strict: unknown fields fail) for the oldest
and newest versions named below, then checks what the schemas cannot: that
ports, probe paths, selectors, Secrets and KEDA's stream names agree with
each other and with the settings file the pods read. It prints, as JSON, the
streams and consumer group the ScaledObjects watch, for the caller to check
against a running queue. The other two modes check the Dockerfile and the
compose file against the same settings. Exit 1 with every problem listed.
"""

import base64
import json
import re
import shlex
import sys

import kubernetes_validate
import yaml

VERSIONS = ["1.30.0", "1.37.0"]
HEALTH_PATHS = {"/healthz", "/readyz"}
LANES = {"lo", "hi", "back"}
GROUP = "inferq"  # queue/jobs/redis: the consumer group of every lane
problems = []


def fail(msg):
    problems.append(msg)


def port_of(listen):
    return int(str(listen).rsplit(":", 1)[1])


def host_port(addr):
    host, port = str(addr).rsplit(":", 1)
    return host, int(port)


def settings_ports(s):
    """The ports each role listens on, by the names the manifests give them."""
    api, server = s["API"], s["Server"]
    return {
        "gateway": {"http": api["Port"], "grpc": api["GrpcPort"], "admin": port_of(api["AdminListen"])},
        "queue": {"grpc": port_of(server["QueueListen"]), "admin": port_of(server["QueueMetricsListen"])},
        "dispatcher": {"admin": port_of(server["DispatcherMetricsListen"])},
    }


def queues(s):
    server = s["Server"]
    return [f'{server["QueueName"]}{n}' for n in range(int(server.get("RequestQueueAmount", 1)))]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def kubernetes(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["apiVersion"].startswith("keda.sh/"):
            continue
        for v in VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f'{d["kind"]}/{d["metadata"]["name"]} (Kubernetes {v}): {e.message} at {list(e.path)}')

    secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        for name, d in by_kind.get("Secret", {}).items()
    }
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if len(namespaces) != 1 or None in namespaces:
        fail(f"every object should be in one namespace, found {namespaces}")
    namespace = next(iter(namespaces))

    settings_text = secrets.get("inferq-settings", {}).get("settings.yaml")
    if settings_text is None:
        fail("no Secret inferq-settings with settings.yaml")
        return None
    settings = yaml.safe_load(settings_text)
    server = settings["Server"]
    ports = settings_ports(settings)
    if secrets.get("inferq-redis", {}).get("password") != server["RedisPasswd"]:
        fail("Secret inferq-redis's password differs from Server.RedisPasswd")

    # Workloads: selectors, named ports, probes, the settings mount.
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    pods = {}  # workload name -> (labels, {port name: number}, role)
    dispatcher_queue = {}
    for name, w in workloads.items():
        tmpl = w["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        if not matches(w["spec"]["selector"]["matchLabels"], labels):
            fail(f"{name}: its selector does not match its pods' labels")
        named = {}
        role = None
        vols = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
        for c in tmpl["spec"]["containers"]:
            cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            named.update(cports)
            for kind in ("readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    fail(f"{name}: no {kind}")
                    continue
                for how in ("httpGet", "tcpSocket"):
                    if how in probe and probe[how]["port"] not in cports:
                        fail(f"{name}: {kind} port {probe[how]['port']!r} is not a container port")
                if "httpGet" in probe and probe["httpGet"]["path"] not in HEALTH_PATHS:
                    fail(f"{name}: {kind} path {probe['httpGet']['path']} is not one of {HEALTH_PATHS}")
            if "resources" not in c or "requests" not in c["resources"]:
                fail(f"{name}: no resource requests")
            if c.get("image", "").split(":")[0] != "inferq":
                continue
            args = c.get("args", [])
            role = args[0] if args else None
            if role not in ports:
                fail(f"{name}: unknown inferq role {role!r}")
                continue
            if cports != ports[role]:
                fail(f"{name}: container ports {cports} differ from the settings' {ports[role]}")
            yaml_arg = args[args.index("--yaml") + 1] if "--yaml" in args else None
            mounted = False
            for m in c.get("volumeMounts", []):
                secret = vols.get(m["name"], {}).get("secret", {}).get("secretName")
                if yaml_arg and secret in secrets and yaml_arg.startswith(m["mountPath"] + "/"):
                    key = yaml_arg[len(m["mountPath"]) + 1:]
                    mounted = key in secrets[secret]
            if not mounted:
                fail(f"{name}: --yaml {yaml_arg} is not a key of a mounted Secret")
            if role == "dispatcher":
                n = int(args[1])
                if n >= len(queues(settings)):
                    fail(f"{name}: queue {n} beyond RequestQueueAmount")
                dispatcher_queue[name] = queues(settings)[n]
                grace = tmpl["spec"].get("terminationGracePeriodSeconds", 30)
                if grace <= int(server.get("DrainTimeout", 30)):
                    fail(f"{name}: terminationGracePeriodSeconds {grace} does not cover DrainTimeout")
        pods[name] = (labels, named, role)
    served = sorted(dispatcher_queue.values())
    if served != sorted(queues(settings)):
        fail(f"one dispatcher Deployment per queue wanted: queues {queues(settings)}, served {served}")

    # Services: each selects pods that have the ports it names.
    services = {}
    for name, svc in by_kind.get("Service", {}).items():
        selected = [p for p in pods.values() if matches(svc["spec"].get("selector"), p[0])]
        if not selected:
            fail(f"Service {name} selects no pods")
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for labels, named, _ in selected:
                if (target not in named) if isinstance(target, str) else (target not in named.values()):
                    fail(f"Service {name}: targetPort {target} is not a port of its pods")
        services[name] = {p["port"] for p in svc["spec"]["ports"]}

    # The settings' addresses name these Services.
    host, port = host_port(server["RedisServer"])
    if port not in services.get(host, set()):
        fail(f"Server.RedisServer {server['RedisServer']} is not a Service port")
    for url in server["QueueEndpoints"]:
        host, port = host_port(re.sub(r"^https?://", "", url))
        if port not in services.get(host, set()) or port != ports["queue"]["grpc"]:
            fail(f"QueueEndpoints {url} is not the queue Service's gRPC port")

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for name, d in by_kind.get(kind, {}).items():
            sel = (d["spec"].get("selector") or d["spec"].get("podSelector"))["matchLabels"]
            if not any(matches(sel, p[0]) for p in pods.values()):
                fail(f"{kind} {name} selects no pods")
    for name, d in by_kind.get("NetworkPolicy", {}).items():
        sel = d["spec"]["podSelector"]["matchLabels"]
        named = {k for p in pods.values() if matches(sel, p[0]) for k in p[1]}
        for rule in d["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p["port"], str) and p["port"] not in named:
                    fail(f"NetworkPolicy {name}: port {p['port']} is not a port of its pods")
            for peer in rule.get("from", []):
                ps = peer.get("podSelector")
                if ps and not any(matches(ps["matchLabels"], p[0]) for p in pods.values()):
                    fail(f"NetworkPolicy {name}: a peer selects no pods")

    # KEDA: what each ScaledObject scales and the streams it reads.
    auths = by_kind.get("TriggerAuthentication", {})
    for name, a in auths.items():
        for ref in a["spec"].get("secretTargetRef", []):
            if ref["key"] not in secrets.get(ref["name"], {}):
                fail(f"TriggerAuthentication {name}: no Secret {ref['name']} key {ref['key']}")
    prefix = server.get("RedisKeyPrefix", "inferq:")
    redis_svc, redis_port = host_port(server["RedisServer"])
    watched = []
    scaled = by_kind.get("ScaledObject", {})
    for name, so in scaled.items():
        spec = so["spec"]
        target = spec["scaleTargetRef"]["name"]
        if spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment" or target not in dispatcher_queue:
            fail(f"ScaledObject {name}: target {target} is not a dispatcher Deployment")
            continue
        queue = dispatcher_queue[target]
        lag_lanes = set()
        for t in spec["triggers"]:
            md = t["metadata"]
            if t["type"] != "redis-streams":
                fail(f"ScaledObject {name}: trigger type {t['type']}")
                continue
            if md.get("address") != f"{redis_svc}.{namespace}.svc.cluster.local:{redis_port}":
                fail(f"ScaledObject {name}: address {md.get('address')} is not the Redis Service")
            m = re.fullmatch(re.escape(f"{prefix}q:{queue}:") + r"(\w+)", md.get("stream", ""))
            if not m or m.group(1) not in LANES:
                fail(f"ScaledObject {name}: stream {md.get('stream')!r} is not a lane of {queue}")
            if md.get("consumerGroup") != GROUP:
                fail(f"ScaledObject {name}: consumerGroup {md.get('consumerGroup')!r}, not {GROUP!r}")
            counts = [k for k in ("lagCount", "pendingEntriesCount", "streamLength") if k in md]
            if len(counts) != 1 or not str(md[counts[0]]).isdigit() or int(md[counts[0]]) < 1:
                fail(f"ScaledObject {name}: one positive count wanted, got {counts}")
            if "lagCount" in md and m:
                lag_lanes.add(m.group(1))
            if t.get("authenticationRef", {}).get("name") not in auths:
                fail(f"ScaledObject {name}: authenticationRef names no TriggerAuthentication")
            watched.append({"queue": queue, "stream": md.get("stream"), "group": md.get("consumerGroup"),
                            "count": counts[0] if counts else None})
        if spec.get("minReplicaCount", 0) == 0 and "lo" not in lag_lanes:
            fail(f"ScaledObject {name}: scale from zero needs a lag trigger on the `lo` lane")
    if sorted(so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()) != sorted(dispatcher_queue):
        fail("one ScaledObject per dispatcher Deployment wanted")
    return {"settings": settings, "streams": watched, "ports": ports}


def dockerfile(path, rendered):
    k8s = kubernetes(rendered)
    stages, copies, env, user, expose, entry = [], [], {}, None, set(), None
    for line in re.sub(r"\\\n", " ", open(path).read()).splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        op = parts[0].upper()
        if op == "FROM":
            stages.append(parts[3] if len(parts) > 3 and parts[2].upper() == "AS" else None)
            user = None
        elif op == "COPY":
            src = [p for p in parts[1:] if p.startswith("--from=")]
            copies.append((src[0][7:] if src else None, parts[-1], len(stages) - 1))
        elif op == "ENV":
            k, v = parts[1].split("=", 1)
            env[k] = v
        elif op == "USER":
            user = parts[1]
        elif op == "EXPOSE":
            expose |= {int(p) for p in parts[1:]}
        elif op == "ENTRYPOINT":
            entry = json.loads(line.split(None, 1)[1])
    final = len(stages) - 1
    if final < 1:
        fail("Dockerfile: not multi-stage")
    for src, _, at in copies:
        if src is not None and src not in stages[:at]:
            fail(f"Dockerfile: COPY --from={src} names no earlier stage")
    final_dests = {dest for src, dest, at in copies if at == final and src}
    if env.get("ORT_DYLIB_PATH") not in final_dests:
        fail("Dockerfile: ORT_DYLIB_PATH is not where the library is copied")
    if not entry or entry[0] not in final_dests:
        fail("Dockerfile: ENTRYPOINT is not the copied binary")
    if user is None or not user.split(":")[0].isdigit() or int(user.split(":")[0]) == 0:
        fail(f"Dockerfile: the last stage's USER {user} is not a numeric non-root user")
    if k8s:
        wanted = {p for role in k8s["ports"].values() for p in role.values()}
        if not wanted <= expose:
            fail(f"Dockerfile: EXPOSE {sorted(expose)} misses {sorted(wanted - expose)}")


def compose(path, nginx_conf):
    c = yaml.safe_load(open(path))
    services = c["services"]
    settings_file = None
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("inferq"):
            continue
        mounts = [v.split(":") for v in svc.get("volumes", [])]
        src = [m[0] for m in mounts if m[1] == "/etc/inferq/settings.yaml"]
        if not src:
            fail(f"compose {name}: no settings mount")
            continue
        settings_file = settings_file or src[0]
    base = path.rsplit("/", 1)[0]
    settings = yaml.safe_load(open(f"{base}/{settings_file}"))
    server = settings["Server"]
    if host_port(server["RedisServer"])[0] not in services:
        fail("compose: Server.RedisServer's host is not a service")
    for url in server["QueueEndpoints"]:
        if host_port(re.sub(r"^https?://", "", url))[0] not in services:
            fail(f"compose: QueueEndpoints {url} is not a service")
    redis = services[host_port(server["RedisServer"])[0]]
    cmd = redis["command"]
    default_pw = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", cmd[cmd.index("--requirepass") + 1])
    if default_pw != server["RedisPasswd"] or cmd[cmd.index("--appendonly") + 1] != "yes":
        fail("compose: Redis's password or appendonly disagrees with the settings")
    served = sorted(s["command"][1] for s in services.values() if s.get("command", [None])[0] == "dispatcher")
    if served != [str(n) for n in range(len(queues(settings)))]:
        fail(f"compose: dispatchers for queues {served}, wanted one service per queue")
    # nginx: the shipped config with the compose command's substitutions.
    script = services["nginx"]["command"][-1]
    conf = open(nginx_conf).read()
    for old, new in re.findall(r"-e 's/([^/]+)/([^/]+)/'", script):
        conf = conf.replace(old, new)
    gateways = {n for n, s in services.items() if s.get("command", [None])[0] == "gateway"}
    api = settings["API"]
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M)
    if not upstreams:
        fail("compose: the nginx config has no upstream servers")
    for host, port in upstreams:
        if host not in gateways or int(port) not in (api["Port"], api["GrpcPort"]):
            fail(f"compose: nginx upstream {host}:{port} is not a gateway's REST or gRPC port")
    if {h for h, _ in upstreams} != gateways:
        fail("compose: nginx does not reach every gateway")


mode = sys.argv[1]
if mode == "kubernetes":
    out = kubernetes(sys.argv[2])
elif mode == "dockerfile":
    dockerfile(sys.argv[2], sys.argv[3])
    out = None
elif mode == "compose":
    compose(sys.argv[2], sys.argv[3])
    out = None
else:
    sys.exit(f"unknown mode {mode}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
if out:
    print(json.dumps({"streams": out["streams"]}))
